"""Webhook delivery against a real receiver: signatures, outcome classes, retries with their
delays, dead letters, reports, and no second delivery of one event to one recipient."""

from __future__ import annotations

import dataclasses
import itertools
import time
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY

from leanon_notification.dispatcher import ATTEMPT_HEADER, DUE_HEADER, retry_topic
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent, encode, now_iso
from leanon_shared.kafka import ERROR_DETAIL_HEADER, ERROR_HEADER
from leanon_shared.models import Contact
from tests.conftest import Infra, free_port, tap, wait_for
from tests.integration.notify_rig import ORG, Receiver, Rig, receiver, rig

TOLERANCE = 0.05  # clocks and topic timestamps are in milliseconds


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_a_signed_event_is_delivered_once_and_reported(infra: Infra, prefix: str) -> None:
    async with receiver() as rec, rig(infra, prefix) as r:
        await r.helper("h1", webhook_url=f"{rec.url}/h1", email="h1@example.org")
        offer = await r.offer("h1", score=0.9)
        report = await r.report(offer, "delivered")
        assert len(rec.at("/h1")) == 1
        hit = rec.at("/h1")[0]
        assert hit.signed_ok and not hit.signed_by_other  # verifies with the secret only
        assert hit.event["id"] == offer.id and hit.event["data"]["score"] == 0.9
        assert report["attempts"] == 1 and report["channel"] == "webhook"
        assert report["recipient"] == {"role": "helper", "id": "h1"}
        assert 0 <= report["latency_ms"] < 10_000
        # The same event again (a redelivery, a replay) reaches nobody twice.
        await r.publish(ev.OFFER_CREATED, offer.data, id=offer.id, time=offer.time)
        marker = await r.offer("h1")
        await r.report(marker, "delivered")
        assert [h.event["id"] for h in rec.at("/h1")] == [offer.id, marker.id]
        # Reports never carry contact details.
        for raw in r.raw_reports:
            assert b"127.0.0.1" not in raw and b"example.org" not in raw


async def test_retries_come_after_the_configured_delays_with_the_same_event(
    infra: Infra, prefix: str
) -> None:
    async with receiver() as rec, rig(infra, prefix) as r:
        rec.script["/flaky"] = [503, 500]
        await r.helper("h1", webhook_url=f"{rec.url}/flaky")
        offer = await r.offer("h1")
        report = await r.report(offer, "delivered")
        hits = rec.at("/flaky")
        assert [h.status for h in hits] == [503, 500, 204]
        assert {h.body for h in hits} == {hits[0].body}  # same bytes, same CloudEvents id
        first, second = gaps([h.at for h in hits])
        assert first >= 0.3 - TOLERANCE and second >= 0.6 - TOLERANCE
        assert first < 5 and second < 5
        assert report["attempts"] == 3
        assert r.reports(offer, "failed") == []


async def test_429_waits_for_retry_after(infra: Infra, prefix: str) -> None:
    async with receiver() as rec, rig(infra, prefix) as r:
        rec.script["/busy"] = [("retry-after", 429, 1)]
        await r.helper("h1", webhook_url=f"{rec.url}/busy")
        offer = await r.offer("h1")
        report = await r.report(offer, "delivered")
        hits = rec.at("/busy")
        assert [h.status for h in hits] == [429, 204]
        # The schedule says 0.3 s; the receiver asked for 1 s, and gets at least that.
        assert gaps([h.at for h in hits])[0] >= 1.0 - TOLERANCE
        assert report["attempts"] == 2


async def test_410_is_final_at_once_and_dead_lettered(infra: Infra, prefix: str) -> None:
    async with receiver() as rec, rig(infra, prefix) as r:
        rec.script["/gone"] = [410]
        await r.helper("h1", webhook_url=f"{rec.url}/gone")
        offer = await r.offer("h1")
        report = await r.report(offer, "failed")
        assert report["attempts"] == 1 and report["reason"] == "http 410"
        assert report["status"] == 410
        dead = await wait_for(lambda: r.dead_for(offer), what="the dead letter")
        headers = dict(dead[0].headers)
        assert headers[ERROR_HEADER] == b"permanent" and headers[ERROR_DETAIL_HEADER] == b"http 410"
        assert orjson.loads(dead[0].value)["id"] == offer.id
        assert b"127.0.0.1" not in dead[0].value  # the event, not the address
        # Nothing more is tried: a later event to the same receiver arrives, the 410 does not.
        marker = await r.offer("h1")
        await r.report(marker, "delivered")
        assert len(rec.at("/gone")) == 2


async def test_what_keeps_failing_gives_up_after_the_last_attempt(
    infra: Infra, prefix: str
) -> None:
    async with receiver() as rec, rig(infra, prefix) as r:
        rec.script["/down"] = [503] * 10
        await r.helper("h1", webhook_url=f"{rec.url}/down")
        offer = await r.offer("h1")
        report = await r.report(offer, "failed")
        assert len(rec.at("/down")) == 4  # 1 + one per configured delay
        assert report["attempts"] == 4 and report["reason"].startswith("gave up after 4 attempts")
        dead = await wait_for(lambda: r.dead_for(offer), what="the dead letter")
        assert dict(dead[0].headers)[ERROR_HEADER] == b"gave-up"
        assert r.reports(offer, "delivered") == []


async def test_connection_refused_is_retried(infra: Infra, prefix: str) -> None:
    async with rig(infra, prefix, retry_delays_s="0.2") as r:
        await r.helper("h1", webhook_url=f"http://127.0.0.1:{free_port()}/nobody")
        offer = await r.offer("h1")
        report = await r.report(offer, "failed")
        assert report["attempts"] == 2 and "ConnectionRefusedError" in report["reason"]


async def test_a_timeout_that_had_in_fact_succeeded_is_the_same_event_again(
    infra: Infra, prefix: str
) -> None:
    async with receiver() as rec, rig(infra, prefix, webhook_timeout_s=0.5) as r:
        rec.script["/late"] = [("slow", 1.0, 204)]  # takes it, answers after our timeout
        await r.helper("h1", webhook_url=f"{rec.url}/late")
        offer = await r.offer("h1")
        report = await r.report(offer, "delivered")
        hits = rec.taken("/late")
        assert len(hits) == 2 and hits[0].body == hits[1].body  # one event id, twice posted
        assert {h.event["id"] for h in hits} == {offer.id}  # the receiver sees one event
        assert report["attempts"] == 2


async def test_a_stalled_endpoint_delays_nobody_else(infra: Infra, prefix: str) -> None:
    async with receiver() as rec, rig(infra, prefix, webhook_timeout_s=3.0) as r:
        rec.script["/stalled"] = [("hold",)] * 30
        await r.helper("h-stalled", webhook_url=f"{rec.url}/stalled")
        await r.helper("h-fine", webhook_url=f"{rec.url}/fine")
        stalled = [await r.offer("h-stalled") for _ in range(30)]
        await wait_for(lambda: len(rec.script["/stalled"]) == 0, what="every stalled post")
        started = time.time()
        fine = [await r.offer("h-fine") for _ in range(20)]
        await wait_for(lambda: len(rec.taken("/fine")) == 20, timeout=10, what="the others")
        latest = max(h.at for h in rec.taken("/fine"))
        assert latest - started < 1.0, "a stalled endpoint held up other deliveries"
        assert not any(r.reports(e) for e in stalled)  # still waiting on their timeout
        assert {h.event["id"] for h in rec.taken("/fine")} == {e.id for e in fine}
        rec.release()


def deferred_so_far() -> float:
    sample = REGISTRY.get_sample_value(
        "leanon_notification_deliveries_total", {"channel": "webhook", "outcome": "deferred"}
    )
    return sample or 0.0


async def all_delivered_at_first_attempt(r: Rig, rec: Receiver, n: int, answer_s: float) -> None:
    """A burst of n offers to one host that answers each post after `answer_s`: every one
    arrives once, on its first attempt."""
    rec.script["/busy"] = [("slow", answer_s, 204)] * n
    await r.helper("h1", webhook_url=f"{rec.url}/busy")
    burst = await r.offers("h1", n)
    reports = [await r.report(offer, "delivered", timeout=30) for offer in burst]
    assert [report["attempts"] for report in reports] == [1] * n
    assert sorted(h.event["id"] for h in rec.taken("/busy")) == sorted(e.id for e in burst)


async def test_a_burst_to_a_busy_but_healthy_host_spends_no_attempts(
    infra: Infra, prefix: str
) -> None:
    """Two posts at once to the host and one queued: the rest of a burst of 12 find every slot
    taken and go round the shortest retry topic, as often as it takes, without spending an
    attempt (four would give up here) or being told of as failed."""
    before = deferred_so_far()
    async with receiver() as rec, rig(infra, prefix, max_in_flight_per_host=2) as r:
        await all_delivered_at_first_attempt(r, rec, 12, 0.3)
        assert r.reports(kind="failed") == [] and r.dead == []
    assert deferred_so_far() - before > 0  # some did find the host full


async def test_a_busy_host_that_answers_gets_its_put_off_deliveries_back_when_it_has_room(
    infra: Infra, prefix: str
) -> None:
    """A delivery put off by a host whose slots are all taken is due again about when the host
    should have worked through what it holds (its time between answers times that), rather
    than after the shortest retry delay, here 2 s: a burst to one platform's endpoint ends
    sooner, still without spending an attempt."""
    due_in_ms: list[int] = []

    def on_retry(record: ConsumerRecord[bytes, bytes]) -> None:
        due_in_ms.append(int(dict(record.headers)[DUE_HEADER]) - record.timestamp)

    async with (
        receiver() as rec,
        rig(infra, prefix, max_in_flight_per_host=2, retry_delays_s="2,4") as r,
        tap(infra, [retry_topic(prefix, 2.0)], on_retry),
    ):
        await all_delivered_at_first_attempt(r, rec, 40, 0.1)
    assert due_in_ms, "no delivery was put off"
    # BUSY_WAIT_S (0.5 s) until the host has answered twice; then 3 held x ~0.05 s apart
    # (slack for a loaded machine: the old rule made every one 2,000 ms)
    assert max(due_in_ms) < 1500, due_in_ms
    assert min(due_in_ms) < 450, due_in_ms


async def test_who_hears_what(infra: Infra, prefix: str) -> None:
    async with receiver() as rec, rig(infra, prefix) as r:
        await r.helper("h1", webhook_url=f"{rec.url}/helper")
        await r.contacts.put(ORG, "requester", "r-9", Contact(webhook_url=f"{rec.url}/requester"))
        sent = [
            await r.publish(
                ev.OFFER_CREATED, {"request_id": "r-9", "offer_id": "o1", "helper_id": "h1"}
            ),
            await r.publish(
                ev.OFFER_WITHDRAWN,
                {"request_id": "r-9", "offer_id": "o1", "helper_id": "h1", "reason": "filled"},
            ),
            await r.publish(ev.REQUEST_MATCHED, {"request_id": "r-9", "assignments": []}),
            await r.publish(
                ev.REQUEST_UNMATCHED, {"request_id": "r-9", "reason": "no helper with skill diving"}
            ),
            await r.publish(ev.REQUEST_EXPIRED, {"request_id": "r-9"}),
        ]
        quiet = [  # lifecycle events nobody is sent
            await r.publish(
                ev.OFFER_ACCEPTED_EVT, {"request_id": "r-9", "offer_id": "o1", "helper_id": "h1"}
            ),
            await r.publish(ev.REQUEST_ACCEPTED, {"request_id": "r-9"}),
        ]
        for event in sent:
            await r.report(event, "delivered")
        helper_types = [h.event["type"] for h in rec.taken("/helper")]
        requester_types = [h.event["type"] for h in rec.taken("/requester")]
        assert sorted(helper_types) == sorted([ev.OFFER_CREATED, ev.OFFER_WITHDRAWN])
        assert sorted(requester_types) == sorted(
            [ev.REQUEST_MATCHED, ev.REQUEST_UNMATCHED, ev.REQUEST_EXPIRED]
        )
        unmatched = next(
            h for h in rec.taken("/requester") if h.event["type"] == ev.REQUEST_UNMATCHED
        )
        assert unmatched.event["data"]["reason"] == "no helper with skill diving"
        assert all(r.reports(e) == [] for e in quiet)


async def test_a_delivery_whose_report_was_lost_is_reported_not_repeated(
    infra: Infra, prefix: str
) -> None:
    """As after a crash between the webhook and its report: only the report goes out."""
    async with receiver() as rec, rig(infra, prefix) as r:
        await r.helper("h1", webhook_url=f"{rec.url}/h1")
        offer = CloudEvent(
            type=ev.OFFER_CREATED,
            source=ev.SOURCE_MATCHING,
            subject="r-1",
            time=now_iso(),
            data={"request_id": "r-1", "offer_id": "o-1", "helper_id": "h1"},
            extensions={ev.ORG_EXTENSION: ORG},
        )
        sent = f"{prefix}sent:{ORG}:{offer.source}:{offer.id}:helper:h1:webhook"
        stored = {"delivered": True, "channel": "webhook", "attempts": 2, "latency_ms": 12.5}
        await r.redis.set(sent, orjson.dumps(stored))
        await r.publish(ev.OFFER_CREATED, offer.data, id=offer.id, time=offer.time)
        report = await r.report(offer, "delivered")
        assert report["attempts"] == 2 and report["latency_ms"] == 12.5
        assert rec.hits == []
        assert await r.redis.get(sent) == b"done"


async def test_a_record_that_always_fails_is_set_aside_not_looped_on(
    infra: Infra, prefix: str
) -> None:
    async with receiver() as rec, rig(infra, prefix) as r:
        await r.helper("h1", webhook_url=f"{rec.url}/h1")
        poison = CloudEvent(
            type=ev.OFFER_CREATED,
            source=ev.SOURCE_MATCHING,
            data={"request_id": "r-1", "offer_id": "o-1", "helper_id": "h1"},
            extensions={ev.ORG_EXTENSION: ORG},
        )
        value, headers = encode(poison)
        broken = [*headers, (ATTEMPT_HEADER, b"second"), (DUE_HEADER, b"0")]
        await r.bus.send_raw(retry_topic(prefix, 0.3), value, b"h1", broken)
        dead = await wait_for(lambda: r.dead_for(poison), what="the poison record set aside")
        headers_out = dict(dead[0].headers)
        assert headers_out[ERROR_HEADER] == b"unprocessable"
        assert headers_out[ERROR_DETAIL_HEADER] == b"ValueError"
        assert rec.hits == []
        # The retry consumer goes on with the next record of that partition.
        value, headers = encode(poison := dataclasses.replace(poison, id="next"))
        good = [*headers, (ATTEMPT_HEADER, b"2"), (DUE_HEADER, b"0")]
        await r.bus.send_raw(retry_topic(prefix, 0.3), value, b"h1", good)
        report = await r.report(poison, "delivered")
        assert report["attempts"] == 2


async def test_a_private_target_is_refused_at_delivery_time(infra: Infra, prefix: str) -> None:
    async with receiver() as rec, rig(infra, prefix) as r:
        port = rec.url.rsplit(":", 1)[1]
        targets = {  # only 127.0.0.1 is allowed; these reach the same receiver by other names
            "h-name": f"http://localhost:{port}/by-name",
            "h-number": f"http://2130706433:{port}/by-number",
        }
        for helper_id, url in targets.items():
            await r.helper(helper_id, webhook_url=url)
        offers = [await r.offer(helper_id) for helper_id in targets]
        reports = [await r.report(o, "failed") for o in offers]
        assert [(x["reason"], x["attempts"]) for x in reports] == [
            ("target address is private", 1),
            ("invalid url", 1),
        ]
        assert rec.hits == []


async def test_a_held_back_offer_is_never_withdrawn_to_its_helper(
    infra: Infra, prefix: str
) -> None:
    now = datetime.now(UTC)
    quiet = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"
    async with receiver() as rec, rig(infra, prefix, quiet_hours=quiet) as r:
        await r.helper("h1", "UTC", webhook_url=f"{rec.url}/h1")
        offer = await r.offer("h1", request_id="r-q")
        held = await r.report(offer, "failed")
        assert held["held"] is True and held["reason"].startswith("held back: quiet hours")
        withdrawn = await r.publish(
            ev.OFFER_WITHDRAWN, offer.data | {"reason": "request cancelled"}
        )
        await r.helper("h2", "UTC", webhook_url=f"{rec.url}/h2")
        marker = await r.publish(
            ev.OFFER_WITHDRAWN, {"request_id": "r-q", "offer_id": "o-other", "helper_id": "h2"}
        )
        await r.report(marker, "delivered")  # withdrawals are not subject to quiet hours
        assert r.reports(withdrawn) == [] and rec.at("/h1") == []


async def test_an_event_ahead_of_its_contact_waits_for_it_and_goes_at_the_first_attempt(
    infra: Infra, prefix: str
) -> None:
    """The webhook claim taken with the first read of an unknown contact is given back, so the
    usual wait for the contact ends in a delivery at once, not in "in flight elsewhere" (a
    retry topic, with the same attempt number)."""
    async with receiver() as rec, rig(infra, prefix) as r:
        await r.helper("h0", webhook_url=f"{rec.url}/h0")
        await r.report(await r.offer("h0", request_id="r-1"), "delivered")  # consuming now
        early = await r.offer("h1", request_id="r-1")
        # Same key, so the same partition, read after `early`: once it is delivered, `early`
        # has been read and found no contact.
        await r.report(await r.offer("h0", request_id="r-1"), "delivered")
        assert r.reports(early) == [] and rec.at("/h1") == []
        await r.helper("h1", webhook_url=f"{rec.url}/h1")
        report = await r.report(early, "delivered")
        assert report["attempts"] == 1
        assert [h.event["id"] for h in rec.at("/h1")] == [early.id]
        retries = retry_topic(prefix, 0.3)
        assert await _records_in(infra, retries, r.settings.topic_partitions) == 0


async def _records_in(infra: Infra, topic: str, partitions: int) -> int:
    probe = AIOKafkaConsumer(bootstrap_servers=infra.kafka_bootstrap, group_id=None)
    await probe.start()
    try:
        ends = await probe.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await probe.stop()
