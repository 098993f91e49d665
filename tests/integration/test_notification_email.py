"""Email against a real SMTP server (aiosmtpd): the facts as text, STARTTLS when offered,
a refused mailbox is final, and each event reaches a mailbox once."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from leanon_shared import events as ev
from leanon_shared.models import Contact
from tests.conftest import Infra, wait_for
from tests.integration.notify_rig import ORG, mailbox, receiver, rig


async def test_email_carries_the_facts_once(infra: Infra, prefix: str) -> None:
    with mailbox() as box:
        async with (
            receiver() as rec,
            rig(infra, prefix, smtp_url=f"smtp://127.0.0.1:{box.port}") as r,
        ):
            await r.helper("h1", webhook_url=f"{rec.url}/h1", email="h1@example.org")
            offer = await r.offer(
                "h1",
                request_id="r-1",
                window={"start": "2026-12-01T09:00:00+00:00", "end": "2026-12-01T10:00:00+00:00"},
                skills={"first_aid": 2},
                description="Groceries upstairs",
            )
            await wait_for(lambda: len(r.reports(offer, "delivered")) == 2, what="both channels")
            channels = sorted(rep["channel"] for rep in r.reports(offer, "delivered"))
            assert channels == ["email", "webhook"]
            assert len(box.messages) == 1 and len(rec.taken("/h1")) == 1
            mail = box.messages[0]
            assert mail["To"] == "h1@example.org" and mail["X-LeanOn-Event-Id"] == offer.id
            text = mail.get_payload(decode=True).decode()
            for fact in [
                "r-1",
                offer.data["offer_id"],
                "2026-12-01T09:00:00",
                "first_aid",
                "Groceries",
            ]:
                assert fact in text
            assert box.tls == [False]  # this server offers no STARTTLS
            # Redelivered: no second mail.
            await r.publish(ev.OFFER_CREATED, offer.data, id=offer.id, time=offer.time)
            marker = await r.offer("h1")
            await wait_for(lambda: len(r.reports(marker, "delivered")) == 2, what="the marker")
            assert [m["X-LeanOn-Event-Id"] for m in box.messages] == [offer.id, marker.id]
            for raw in r.raw_reports:
                assert b"h1@example.org" not in raw


async def test_starttls_is_used_when_the_server_offers_it(
    infra: Infra, prefix: str, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with mailbox(tls_context=server_tls, require_starttls=True) as box:
        smtp = {"smtp_url": f"smtp://127.0.0.1:{box.port}", "smtp_ca_file": str(ca_file)}
        async with rig(infra, prefix, **smtp) as r:
            await r.contacts.put(ORG, "requester", "r-2", Contact(email="r2@example.org"))
            event = await r.publish(ev.REQUEST_EXPIRED, {"request_id": "r-2"})
            report = await r.report(event, "delivered")
            assert report["channel"] == "email"
            assert box.tls == [True]  # the server refuses mail without STARTTLS
            assert "expired" in box.messages[0].get_payload(decode=True).decode()


async def test_a_refused_mailbox_is_final(infra: Infra, prefix: str) -> None:
    with mailbox() as box:
        box.refuse.add("nobody@example.org")
        async with rig(infra, prefix, smtp_url=f"smtp://127.0.0.1:{box.port}") as r:
            await r.contacts.put(ORG, "requester", "r-3", Contact(email="nobody@example.org"))
            event = await r.publish(
                ev.REQUEST_UNMATCHED, {"request_id": "r-3", "reason": "no helper nearby"}
            )
            report = await r.report(event, "failed")
            assert report["attempts"] == 1 and report["reason"].startswith("smtp 550")
            await wait_for(lambda: r.dead_for(event), what="the dead letter")
            assert box.messages == []
