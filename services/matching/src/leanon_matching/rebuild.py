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
import pickle
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, TypeVar

import orjson
from aiokafka import ConsumerRecord
from redis.asyncio import Redis

from leanon_matching import metrics
from leanon_matching.bulk import Commands, Entries, IndexBuilder, send, set_writes
from leanon_matching.index import HelperIndex
from leanon_shared.replay import replay as replay_topic

log = logging.getLogger(__name__)
LOCK_TTL_S = 60
LOAD_CHUNK = 20_000  # records per planner hand-off
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
    """Write every helper of the topic, as of its end at the time of the call, into an index
    under `index.prefix` that holds nothing yet (see bulk.py).

    The stages run at once: this process fetches records and sends writes to Redis, PLANNERS
    planner processes decode and pack them (the costliest step in Python: JSON, packing, H3
    cells) and keep the latest version of each helper, and Redis writes the previous batch of
    profiles. Each planner takes the records of its own partitions: a helper's records all
    sit in one partition, so one planner sees all of them, in order, and its profile writes
    reach Redis in the order it made them. At the end the planners swap the sets' entries, so
    that each encodes half of the sets, and Redis restores them.
    """
    loop = asyncio.get_running_loop()
    pending: list[list[RawRecord]] = [[] for _ in range(PLANNERS)]
    planning: list[asyncio.Future[tuple[Commands, int]]] = []
    writing: list[asyncio.Task[None]] = []
    redis = index.redis
    with contextlib.ExitStack() as stack:
        planners = [
            stack.enter_context(
                ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_start_planner)
            )
            for _ in range(PLANNERS)
        ]

        def run(n: int, call: Callable[..., T], *args: Any) -> asyncio.Future[T]:
            return loop.run_in_executor(planners[n], call, *args)

        async def hand_off(n: int) -> None:
            records = pending[n]
            pending[n] = []
            planning.append(run(n, _plan, records, index.prefix))
            if len(planning) > PLANNERS:
                await write(planning.pop(0))

        async def write(planned: asyncio.Future[tuple[Commands, int]]) -> None:
            commands, unreadable = await planned
            if unreadable:
                metrics.INDEX_UPDATES.labels("unreadable").inc(unreadable)
            if writing:
                await writing.pop()
            writing.append(asyncio.create_task(send(redis, commands)))

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
            log.warning("index rebuild: %d records replayed; writing the sets", records)
            theirs = await asyncio.gather(*(run(n, _swap_out, n) for n in range(PLANNERS)))
            for commands in await asyncio.gather(
                *(
                    run(n, _set_writes, index.prefix, [t[n] for t in theirs])
                    for n in range(PLANNERS)
                )
            ):
                await send(redis, commands)
            return records
        finally:
            for task in writing:
                task.cancel()


T = TypeVar("T")
RawRecord = tuple[bytes | None, bytes | None, int, int]  # key, value, partition, offset
_builder: IndexBuilder | None = None  # the planner's
_own: Entries = {}  # the planner's share of the sets' entries, while it waits for the others'


def _start_planner() -> None:
    # Packing makes many short-lived objects; the default thresholds collect every 700.
    gc.set_threshold(50_000, 50, 100)


def _plan(records: list[RawRecord], prefix: str) -> tuple[Commands, int]:
    """In the planner process: the profile writes of raw records, and how many were
    unreadable (logged, and skipped as the index handler skips them: the helper's previous
    version stands)."""
    global _builder
    if _builder is None:
        _builder = IndexBuilder(prefix)
    changes: list[tuple[str, str, dict[str, Any] | None]] = []
    unreadable = 0

    def skip(where: str, exc: Exception) -> None:
        nonlocal unreadable
        unreadable += 1
        log.error("skipping unreadable helper record %s: %r", where, exc)

    for key, value, partition, offset in records:
        org, _, helper_id = (key or b"").decode("utf-8", "replace").partition("/")
        try:
            changes.append((org, helper_id, None if value is None else orjson.loads(value)))
        except orjson.JSONDecodeError as exc:
            skip(f"at {partition}/{offset}", exc)
    return _builder.plan(
        changes, lambda org, helper_id, exc: skip(f"{org}/{helper_id}", exc)
    ), unreadable


def _swap_out(me: int) -> list[bytes]:
    """In planner `me`, once every record is planned: the sets' entries for each other
    planner, pickled here (the fetching process only hands the bytes on); its own share
    stays here."""
    global _own
    if _builder is None:
        return [b""] * PLANNERS
    parts = _builder.entries(PLANNERS)
    _own = parts[me]
    return [b"" if n == me else pickle.dumps(part, protocol=5) for n, part in enumerate(parts)]


def _set_writes(prefix: str, theirs: list[bytes]) -> Commands:
    """In a planner: the writes of its share of the sets, its entries and the others'."""
    return set_writes(prefix, [_own, *(pickle.loads(part) for part in theirs if part)])
