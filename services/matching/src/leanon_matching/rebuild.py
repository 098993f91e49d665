"""Rebuilding the helper index by replaying the compacted helpers topic from the start.

Redis is derived state: when it is empty, or holds an index of another version, matching
clears what is there and replays every helper before it takes any request. One instance
rebuilds (a lock in Redis); the others wait for it to finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from leanon_matching import metrics
from leanon_matching.handlers import packed_from
from leanon_matching.index import HelperIndex

log = logging.getLogger(__name__)
LOCK_TTL_S = 60
WAIT_FOR_OTHER_S = 1800


@dataclass(frozen=True, slots=True)
class RebuildStats:
    records: int
    seconds: float
    rebuilt_here: bool


async def ensure_index(
    index: HelperIndex, redis: Redis, bootstrap: str, topic: str, lock_key: str
) -> RebuildStats | None:
    """Rebuild when needed; returns what was done, or None when the index was already current."""
    if await index.is_current():
        return None
    token = uuid.uuid4().hex
    started = time.monotonic()
    while not await redis.set(lock_key, token, nx=True, ex=LOCK_TTL_S):
        if await index.is_current():
            return RebuildStats(0, time.monotonic() - started, rebuilt_here=False)
        if time.monotonic() - started > WAIT_FOR_OTHER_S:
            raise TimeoutError("another instance's index rebuild did not finish")
        await asyncio.sleep(0.5)
    try:
        if await index.is_current():  # another instance finished just before we got the lock
            return RebuildStats(0, time.monotonic() - started, rebuilt_here=False)
        log.warning("helper index missing or of another version: rebuilding from %s", topic)
        metrics.REBUILDS.inc()
        await index.clear()
        records = await replay(
            index, bootstrap, topic, lambda: redis.set(lock_key, token, ex=LOCK_TTL_S)
        )
        await index.mark_current()
        seconds = time.monotonic() - started
        log.warning("helper index rebuilt: %d records in %.1fs", records, seconds)
        return RebuildStats(records, seconds, rebuilt_here=True)
    finally:
        if await redis.get(lock_key) in (token, token.encode()):
            await redis.delete(lock_key)


async def replay(index: HelperIndex, bootstrap: str, topic: str, keep_lock: object = None) -> int:
    """Apply every record of the topic up to its end at the time of the call."""
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
        partitions = await _partitions(bootstrap, topic)
        if not partitions:
            return 0
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        todo = {tp for tp in partitions if end[tp] > 0}
        records, last_report = 0, time.monotonic()
        loaded: set[tuple[str, str]] = set()
        writing: asyncio.Task[None] | None = None
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=1000, max_records=10_000)
            for tp, batch in batches.items():
                batch = [r for r in batch if r.offset < end[tp]]
                # Plan this batch (Python) while Redis writes the previous one; writes stay in
                # order, so a helper's second version always sees its first.
                bulk = index.prepare_load(packed_from(batch), loaded)
                if writing is not None:
                    await writing
                writing = asyncio.create_task(index.load(bulk))
                records += len(batch)
                metrics.REBUILD_HELPERS.inc(len(batch))
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                log.warning("index rebuild: %d records replayed", records)
                if callable(keep_lock):
                    await keep_lock()
        if writing is not None:
            await writing
        return records
    finally:
        await consumer.stop()


async def _partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="leanon-matching-rebuild")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"]) for d in described for p in d["partitions"]]
