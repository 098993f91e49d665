"""Who hears what with matching running: per-helper limits hold offers back and matching moves
on to the next helper; in a fan-out the helpers who lost the race are told."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from leanon_intake.ssrf import WebhookHosts
from leanon_shared import events as ev
from tests.conftest import Infra, wait_for
from tests.integration.harness import Rig, helper, rig, submission, tomorrow
from tests.integration.notify_rig import Receiver, notification_settings, receiver, service

NEAR = {"lat": 52.511, "lon": 13.39}
FAR = {"lat": 52.53, "lon": 13.39}


@contextlib.asynccontextmanager
async def matching_and_notification(
    infra: Infra, prefix: str, matching: dict[str, Any], **notification: Any
) -> AsyncIterator[tuple[Rig, Receiver]]:
    async with (
        receiver() as rec,
        rig(infra, prefix, **matching) as r,
        service(notification_settings(infra, prefix, **notification)),
    ):
        r.intake.webhook_hosts = WebhookHosts(frozenset({"127.0.0.1"}))
        yield r, rec


async def add_helper(r: Rig, rec: Receiver, name: str, **over: Any) -> None:
    contact = {"webhook_url": f"{rec.url}/helpers/{name}"}
    await r.intake.upsert_helper("o", name, helper(contact=contact, **over))


def held(r: Rig, request_id: str) -> list[dict[str, Any]]:
    return [e.data for e in r.events.of(request_id, "notification.failed") if e.data.get("held")]


async def test_quiet_hours_hold_an_offer_back_and_the_next_helper_gets_it(
    infra: Infra, prefix: str
) -> None:
    now = datetime.now(UTC)
    # Quiet for two hours around now in UTC; in Kolkata (UTC+5:30) it is the middle of the day.
    quiet = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"
    async with matching_and_notification(infra, prefix, {}, quiet_hours=quiet) as (r, rec):
        sleeping = {"timezone": "UTC", "weekly": helper().availability.model_dump()["weekly"]}
        awake = sleeping | {"timezone": "Asia/Kolkata"}
        await add_helper(r, rec, "asleep", location=NEAR, availability=sleeping)
        await add_helper(r, rec, "awake", location=FAR, availability=awake)
        await wait_for(lambda: r.redis.exists(f"{prefix}h:o:awake"), what="helpers indexed")
        await r.intake.submit_request("o", submission(), "q1")
        offers = [e.data for e in await r.wait("q1", "offer.created", 2)]
        assert [o["helper_id"] for o in offers] == ["asleep", "awake"]
        declined = (await r.wait("q1", "offer.declined"))[0].data
        assert declined["offer_id"] == offers[0]["offer_id"]
        assert declined["reason"].startswith("held back: quiet hours")
        await wait_for(lambda: rec.taken("/helpers/awake"), what="the awake helper's webhook")
        assert rec.taken("/helpers/asleep") == []  # held back: never sent
        report = await wait_for(lambda: held(r, "q1"), what="the held-back report")
        assert report[0]["recipient"] == {"role": "helper", "id": "asleep"}
        assert report[0]["reason"].startswith("held back: quiet hours")
        record = await r.intake.offers.get("o", offers[0]["offer_id"])
        assert record is not None and record.status == "declined"


async def test_at_most_n_offers_an_hour_per_helper(infra: Infra, prefix: str) -> None:
    async with matching_and_notification(infra, prefix, {}, offers_per_hour=1) as (r, rec):
        await add_helper(r, rec, "busy", location=NEAR, capacity=3)
        await add_helper(r, rec, "other", location=FAR, capacity=3)
        await wait_for(lambda: r.redis.exists(f"{prefix}h:o:other"), what="helpers indexed")
        await r.intake.submit_request("o", submission(), "n1")
        first = (await r.wait("n1", "offer.created"))[0].data
        assert first["helper_id"] == "busy"
        await wait_for(lambda: rec.taken("/helpers/busy"), what="the first offer")
        await r.intake.submit_request("o", submission(start=tomorrow(14)), "n2")
        offers = [e.data["helper_id"] for e in await r.wait("n2", "offer.created", 2)]
        assert offers == ["busy", "other"]  # held back, so matching moved on
        await wait_for(lambda: rec.taken("/helpers/other"), what="the next helper's offer")
        assert len(rec.taken("/helpers/busy")) == 1
        report = await wait_for(lambda: held(r, "n2"), what="the held-back report")
        assert "offer limit reached (1 an hour)" in report[0]["reason"]


async def test_in_a_fan_out_the_helpers_who_lost_are_told(infra: Infra, prefix: str) -> None:
    async with matching_and_notification(infra, prefix, {"critical_fanout": 3}) as (r, rec):
        for name in ("a", "b", "c"):
            await add_helper(r, rec, name)
        await wait_for(lambda: r.redis.exists(f"{prefix}h:o:c"), what="helpers indexed")
        contact = {"webhook_url": f"{rec.url}/requesters/f1"}
        await r.intake.submit_request("o", submission(urgency="critical", contact=contact), "f1")
        offers = {e.data["helper_id"]: e.data for e in await r.wait("f1", "offer.created", 3)}
        for name in offers:
            await wait_for(lambda n=name: rec.taken(f"/helpers/{n}"), what=f"{name}'s offer")
        await r.intake.answer_offer("o", offers["b"]["offer_id"], "accepted")
        for name in ("a", "c"):
            told = await wait_for(
                lambda n=name: [
                    h for h in rec.taken(f"/helpers/{n}") if h.event["type"] == ev.OFFER_WITHDRAWN
                ],
                what=f"{name} told of the withdrawal",
            )
            assert told[0].event["data"]["reason"] == "filled"
        matched = await wait_for(lambda: rec.taken("/requesters/f1"), what="the requester told")
        assert matched[0].event["type"] == ev.REQUEST_MATCHED
        assert [h.event["type"] for h in rec.taken("/helpers/b")] == [ev.OFFER_CREATED]
