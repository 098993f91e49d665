"""Replaying a topic from its start, for read models that Redis may lose.

Redis holds derived state only. When it comes back empty, the service that owns a read model
replays the topic it is built from, up to the end offsets at the time of the call, before it
serves from it. One instance replays (a lock in Redis); the others wait for the marker.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

log = logging.getLogger(__name__)
LOCK_TTL_S = 60
WAIT_FOR_OTHER_S = 1800
BatchApplier = Callable[[Sequence[ConsumerRecord[bytes, bytes]]], Awaitable[None]]


async def replay(
    bootstrap: str,
    topic: str,
    apply: BatchApplier,
    on_progress: Callable[[int], Awaitable[None]] | None = None,
) -> int:
    """Apply every record of the topic, partition by partition in order; returns the count."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = await partitions_of(bootstrap, topic)
        if not partitions:
            return 0
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        todo = {tp for tp in partitions if end[tp] > 0}
        records, last_report = 0, time.monotonic()
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=1000, max_records=10_000)
            for tp, batch in batches.items():
                batch = [r for r in batch if r.offset < end[tp]]
                await apply(batch)
                records += len(batch)
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
            if on_progress is not None and time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                await on_progress(records)
        return records
    finally:
        await consumer.stop()


async def partitions_of(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="leanon-replay")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"]) for d in described for p in d["partitions"]]


async def ensure_replayed(
    redis: Redis,
    marker_key: str,
    bootstrap: str,
    topic: str,
    apply: BatchApplier,
) -> int | None:
    """Replay into Redis unless the marker says it holds the read model; None when it did.

    The marker is written only after a full replay, so a crash midway replays again.
    """
    if await redis.exists(marker_key):
        return None
    lock_key, token = f"{marker_key}:lock", uuid.uuid4().hex
    started = time.monotonic()
    while not await redis.set(lock_key, token, nx=True, ex=LOCK_TTL_S):
        if await redis.exists(marker_key):
            return None
        if time.monotonic() - started > WAIT_FOR_OTHER_S:
            raise TimeoutError(f"another instance's replay of {topic} did not finish")
        await asyncio.sleep(0.5)
    try:
        if await redis.exists(marker_key):
            return None
        log.warning("read model missing from Redis: replaying %s", topic)

        async def progress(records: int) -> None:
            log.warning("replaying %s: %d records", topic, records)
            await redis.set(lock_key, token, ex=LOCK_TTL_S)

        records = await replay(bootstrap, topic, apply, progress)
        await redis.set(marker_key, b"1")
        log.warning("replayed %s: %d records in %.1fs", topic, records, time.monotonic() - started)
        return records
    finally:
        if await redis.get(lock_key) in (token, token.encode()):
            await redis.delete(lock_key)
