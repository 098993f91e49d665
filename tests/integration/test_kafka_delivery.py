"""Delivery semantics on real Kafka: commit after the effect, redelivery on failure, DLQ."""

import asyncio

from aiokafka import AIOKafkaConsumer

from leanon_shared.kafka import (
    ERROR_DETAIL_HEADER,
    ERROR_HEADER,
    EventBus,
    make_broker,
    subscribe_batches,
)
from leanon_shared.settings import LeanOnSettings
from tests.conftest import Infra, wait_for


def settings(infra: Infra, prefix: str) -> LeanOnSettings:
    return LeanOnSettings(
        kafka_bootstrap=infra.kafka_bootstrap, redis_url=infra.redis_url, topic_prefix=prefix
    )


async def test_a_failing_batch_comes_again_and_nothing_is_lost(infra: Infra, prefix: str) -> None:
    s = settings(infra, prefix)
    topic = f"{prefix}work"
    bus = EventBus(s, "test")
    await bus.start()
    for i in range(20):
        await bus.send_raw(topic, f"m{i}".encode(), b"k")
    seen: list[bytes] = []
    failures = {"left": 2}

    async def flaky(records):  # type: ignore[no-untyped-def]
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("redis went away for a moment")
        seen.extend(r.value for r in records)

    broker = make_broker(s, "test")
    subscribe_batches(broker, topic, f"{prefix}g", flaky)
    await broker.start()
    try:
        await wait_for(lambda: len(set(seen)) == 20, what="all 20 records")
    finally:
        await broker.stop()
    assert sorted(set(seen)) == sorted(f"m{i}".encode() for i in range(20))

    # The group committed after the effect: a new consumer in it starts past the 20.
    await bus.send_raw(topic, b"after", b"k")
    again: list[bytes] = []

    async def record(records):  # type: ignore[no-untyped-def]
        again.extend(r.value for r in records)

    broker2 = make_broker(s, "test2")
    subscribe_batches(broker2, topic, f"{prefix}g", record)
    await broker2.start()
    try:
        await wait_for(lambda: b"after" in again, what="the new record")
    finally:
        await broker2.stop()
        await bus.stop()
    assert again == [b"after"]


async def test_dead_letter_keeps_the_original_record_and_says_why(
    infra: Infra, prefix: str
) -> None:
    s = settings(infra, prefix)
    source, dlq = f"{prefix}in", f"{prefix}in.dlq"
    bus = EventBus(s, "test")
    await bus.start()
    await bus.send_raw(source, b"\xff not json", b"key-1", [("x-origin", b"\xfe\x01")])

    async def reject_all(records):  # type: ignore[no-untyped-def]
        for r in records:
            await bus.dead_letter(dlq, r, "bad-json", "structured event is not valid JSON")

    broker = make_broker(s, "test")
    subscribe_batches(broker, source, f"{prefix}g", reject_all)
    await broker.start()
    consumer = AIOKafkaConsumer(
        dlq, bootstrap_servers=infra.kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=20)
    finally:
        await consumer.stop()
        await broker.stop()
        await bus.stop()
    headers = dict(record.headers)
    assert record.key == b"key-1" and record.value == b"\xff not json"
    assert headers["x-origin"] == b"\xfe\x01"
    assert headers[ERROR_HEADER] == b"bad-json"
    assert b"not valid JSON" in headers[ERROR_DETAIL_HEADER]
