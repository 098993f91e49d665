"""Rebuilding the helper index by replaying the compacted helpers topic from the start.

Redis is derived state: when it is empty, or holds an index of another version, matching
clears what is there and replays every helper before it takes any request. One instance
rebuilds (a lock in Redis); the others wait for it to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import struct
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from redis.asyncio import Redis

from leanon_matching import metrics
from leanon_matching.index import LOAD_CHUNK, BulkLoad, HelperIndex, plan_load
from leanon_shared.replay import replay as replay_topic

log = logging.getLogger(__name__)
LOCK_TTL_S = 60
PLANNERS = 2  # processes; with Redis and this one, they keep two cores busy
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
    """Apply every record of the topic up to its end at the time of the call.

    The stages run at once: this process fetches records and sends loads to Redis, PLANNERS
    planner processes decode, pack and group them (the costliest step in Python: JSON,
    packing, H3 cells, encoding), and Redis writes the previous load. Records are gathered
    into loads of LOAD_CHUNK helpers (a fetch brings a few thousand per partition).

    Each planner takes the records of its own partitions. A helper's records all sit in one
    partition, so one planner sees all of them, in order, and knows whether a helper is new
    to this rebuild; its loads reach Redis in the order it made them, so a helper's second
    version always lands after its first.
    """
    loop = asyncio.get_running_loop()
    pending: list[list[RawRecord]] = [[] for _ in range(PLANNERS)]
    planning: list[asyncio.Future[tuple[BulkLoad, int]]] = []
    writing: list[asyncio.Task[None]] = []
    with contextlib.ExitStack() as stack:
        planners = [
            stack.enter_context(
                ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_start_planner)
            )
            for _ in range(PLANNERS)
        ]

        async def hand_off(n: int) -> None:
            records = pending[n]
            pending[n] = []
            planning.append(loop.run_in_executor(planners[n], _plan, records, index.prefix))
            if len(planning) > PLANNERS:
                await write(planning.pop(0))

        async def write(planned: asyncio.Future[tuple[BulkLoad, int]]) -> None:
            bulk, unreadable = await planned
            if unreadable:
                metrics.INDEX_UPDATES.labels("unreadable").inc(unreadable)
            if writing:
                await writing.pop()
            writing.append(asyncio.create_task(index.load(bulk)))

        async def apply(batch: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
            if not batch:
                return
            n = batch[0].partition % PLANNERS  # a batch is one partition's
            pending[n].extend((r.key, r.value, r.partition, r.offset) for r in batch)
            metrics.REBUILD_HELPERS.inc(len(batch))
            if len(pending[n]) >= LOAD_CHUNK:
                await hand_off(n)

        async def progress(records: int) -> None:
            log.warning("index rebuild: %d records replayed", records)
            if callable(keep_lock):
                await keep_lock()

        try:
            records = await replay_topic(bootstrap, topic, apply, progress)
            for n in range(PLANNERS):
                if pending[n]:
                    await hand_off(n)
            while planning:
                await write(planning.pop(0))
            if writing:
                await writing.pop()
            return records
        finally:
            for task in writing:
                task.cancel()


RawRecord = tuple[bytes | None, bytes | None, int, int]  # key, value, partition, offset
_loaded: set[tuple[str, str]] = set()  # the planner's: helpers planned so far in this rebuild


def _start_planner() -> None:
    # Packing makes many short-lived objects; the default thresholds collect every 700.
    gc.set_threshold(50_000, 50, 100)
    _loaded.clear()


def _plan(records: list[RawRecord], prefix: str) -> tuple[BulkLoad, int]:
    """In the planner process: a load planned from raw records, and how many were unreadable
    (logged, and skipped as the index handler skips them)."""
    changes: list[tuple[str, str, dict[str, Any] | None]] = []
    unreadable = 0
    for key, value, partition, offset in records:
        org, _, helper_id = (key or b"").decode("utf-8", "replace").partition("/")
        try:
            changes.append((org, helper_id, None if value is None else orjson.loads(value)))
            continue
        except orjson.JSONDecodeError:
            pass
        unreadable += 1
        log.error("skipping unreadable helper record at %s/%s", partition, offset)
    try:
        return plan_load(changes, _loaded, prefix), unreadable
    except (KeyError, TypeError, ValueError, struct.error):
        pass
    # An unreadable profile among them: find it on its own, then plan the rest once more
    # (those the failed attempt counted as loaded go through apply, only slower).
    readable = []
    for change in changes:
        try:
            plan_load([change], set(), prefix)
        except (KeyError, TypeError, ValueError, struct.error) as exc:
            unreadable += 1
            log.error("skipping unreadable helper record %s/%s: %r", change[0], change[1], exc)
            continue
        readable.append(change)
    return plan_load(readable, _loaded, prefix), unreadable
