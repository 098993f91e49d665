"""The tail of delivered messages, on real Redis and Kafka: the deliveries answered together
settle as one Redis write and one Kafka batch, each sent key before any report, and a failure
reaches every delivery of the group rather than passing for a success."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from leanon_notification.reporter import Recipient, Report, Reporter
from leanon_notification.settle import Settler
from leanon_shared import coalesce
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent, now_iso
from leanon_shared.coalesce import CoalescingPublisher, CoalescingRedis
from leanon_shared.kafka import EventBus, ensure_topics
from leanon_shared.settings import LeanOnSettings
from leanon_shared.topics import Topics
from tests.conftest import Infra, tap, wait_for
from tests.integration.test_coalesce import CountingRedis


def offer(i: int) -> CloudEvent:
    data = {"request_id": f"r-{i}", "offer_id": f"o-{i}", "helper_id": f"h{i}"}
    return CloudEvent(
        type=ev.OFFER_CREATED,
        source=ev.SOURCE_MATCHING,
        subject=f"r-{i}",
        time=now_iso(),
        data=data,
        extensions={ev.ORG_EXTENSION: "org1"},
    )


async def test_deliveries_answered_together_settle_as_one_write_and_one_batch(
    infra: Infra, redis: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = LeanOnSettings(kafka_bootstrap=infra.kafka_bootstrap, topic_prefix=prefix)
    topic = Topics(prefix).events
    await ensure_topics(settings, Topics(prefix))
    bus = EventBus(settings, "test")
    await bus.start()
    batches: list[int] = []
    real = coalesce.send_batches
    order: list[str] = []

    async def counted(bus: EventBus, topic: str, records: Any) -> None:
        records = list(records)
        order.append("reports")
        batches.append(len(records))
        await real(bus, topic, records)

    monkeypatch.setattr(coalesce, "send_batches", counted)
    counting = CountingRedis(redis)
    batch = counting.counting(CoalescingRedis(counting))  # type: ignore[arg-type]
    execute = batch._line.execute

    async def noted(commands: Any) -> Any:
        order.append("redis")
        return await execute(commands)

    batch._line.execute = noted
    reporter = Reporter(CoalescingPublisher(bus, topic))
    settle = Settler(batch, reporter, 60)
    seen: list[ConsumerRecord[bytes, bytes]] = []
    try:
        calls = []
        for i in range(20):
            to = Recipient("org1", "helper", f"h{i}")
            kept = b'{"delivered": true, "n": %d}' % i
            record = reporter.record(offer(i), to, Report(True, "webhook", 1, 5.0, status=204))
            calls.append(settle(f"{prefix}sent:{i}", kept, record))
        await asyncio.gather(*calls)
        async with tap(infra, [topic], seen.append):
            await wait_for(lambda: len(seen) == 20, what="every report")
    finally:
        await bus.stop()
    assert counting.pipelines == 1 and batches == [20]
    assert order == ["redis", "reports"]  # every sent key is kept before any report goes out
    assert await redis.get(f"{prefix}sent:7") == b'{"delivered": true, "n": 7}'
    assert 55 < await redis.ttl(f"{prefix}sent:7") <= 60
    assert {r.key for r in seen} == {f"r-{i}".encode() for i in range(20)}


async def test_a_failed_write_fails_every_delivery_of_its_group_and_sends_no_report(
    redis: Redis, prefix: str
) -> None:
    batch = CoalescingRedis(redis)

    async def broken(commands: Any) -> Any:
        raise RedisConnectionError("gone")

    batch._line.execute = broken  # type: ignore[method-assign]
    published: list[Any] = []

    class Publisher:
        async def many(self, records: Any) -> None:
            published.extend(records)

    settle = Settler(batch, Reporter(Publisher()), 60)  # type: ignore[arg-type]
    record = (b"{}", None, [])
    results = await asyncio.gather(
        *(settle(f"{prefix}sent:{i}", b"{}", record) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in results)
    assert published == []
