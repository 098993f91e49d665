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
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRecord
from redis.asyncio import Redis

from leanon_matching import metrics
from leanon_matching.handlers import packed_from
from leanon_matching.index import HelperIndex
from leanon_shared.replay import replay as replay_topic

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
    loaded: set[tuple[str, str]] = set()
    writing: list[asyncio.Task[None]] = []

    async def apply(batch: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        # Plan this batch (Python) while Redis writes the previous one; writes stay in order,
        # so a helper's second version always sees its first.
        bulk = index.prepare_load(packed_from(batch), loaded)
        if writing:
            await writing.pop()
        writing.append(asyncio.create_task(index.load(bulk)))
        metrics.REBUILD_HELPERS.inc(len(batch))

    async def progress(records: int) -> None:
        log.warning("index rebuild: %d records replayed", records)
        if callable(keep_lock):
            await keep_lock()

    try:
        records = await replay_topic(bootstrap, topic, apply, progress)
        if writing:
            await writing.pop()
        return records
    finally:
        for task in writing:
            task.cancel()
