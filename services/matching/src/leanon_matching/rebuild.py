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
import os
import pickle
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, TypeVar

import orjson
from aiokafka import ConsumerRecord
from redis.asyncio import Redis

from leanon_matching import metrics
from leanon_matching.bulk import Commands, Entries, IndexBuilder, send, set_writes
from leanon_matching.index import HelperIndex
from leanon_shared.replay import TopicReader, partitions_of

log = logging.getLogger(__name__)
LOCK_TTL_S = 60
LOAD_CHUNK = 20_000  # records per load a planner hands over
PLANNERS = 2  # processes: one per core
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

    PLANNERS planner processes share the topic's partitions. Each reads its own from Kafka,
    decodes and packs the records (the costliest step: JSON, packing, H3 cells), keeps the
    latest version of each helper, and hands this process the profile writes of each load,
    which it sends to Redis while the planner reads the next. A helper's records all sit in
    one partition, so one planner sees all of them, in order, and its writes reach Redis in
    the order it made them. At the end the planners swap the sets' entries, so that each
    encodes a share of the sets, and Redis restores them.
    """
    loop = asyncio.get_running_loop()
    redis = index.redis
    await check_redis_version(redis)
    numbers = [tp.partition for tp in await partitions_of(bootstrap, topic)]
    records = unreadable = 0
    last_report = time.monotonic()
    with contextlib.ExitStack() as stack:
        planners = [
            stack.enter_context(
                ProcessPoolExecutor(
                    1,
                    mp_context=get_context("spawn"),
                    initializer=_start_planner,
                    initargs=(
                        bootstrap,
                        topic,
                        [p for p in numbers if p % PLANNERS == n],
                        index.prefix,
                        LOAD_CHUNK,
                    ),
                )
            )
            for n in range(PLANNERS)
        ]

        def run(n: int, call: Callable[..., T], *args: Any) -> asyncio.Future[T]:
            return loop.run_in_executor(planners[n], call, *args)

        async def pump(n: int) -> None:
            """Planner n's loads into Redis, in order, one ahead."""
            nonlocal records, unreadable, last_report
            planned = run(n, _next_load)
            while True:
                load = await planned
                if not load.done:
                    planned = run(n, _next_load)
                await send(redis, load.commands)
                records += load.records
                unreadable += load.unreadable
                metrics.REBUILD_HELPERS.inc(load.records)
                if time.monotonic() - last_report > 5:
                    last_report = time.monotonic()
                    log.warning("index rebuild: %d records replayed", records)
                    if callable(keep_lock):
                        await keep_lock()
                if load.done:
                    return

        await asyncio.gather(*(pump(n) for n in range(PLANNERS)))
        if unreadable:
            metrics.INDEX_UPDATES.labels("unreadable").inc(unreadable)
        log.warning("index rebuild: %d records replayed; writing the sets", records)
        theirs = await asyncio.gather(*(run(n, _swap_out, n) for n in range(PLANNERS)))
        for commands in await asyncio.gather(
            *(run(n, _set_writes, [t[n] for t in theirs]) for n in range(PLANNERS))
        ):
            await send(redis, commands)
        for ended in [run(n, _leave) for n in range(PLANNERS)]:
            with contextlib.suppress(BrokenProcessPool):
                await ended
        return records


T = TypeVar("T")


async def check_redis_version(redis: Redis) -> None:
    """A rebuild restores sets as DUMP payloads of Redis 7.0's format; older servers refuse
    them with an unhelpful checksum error, so say what is wrong up front."""
    version = str((await redis.info("server"))["redis_version"])
    major, minor, *_ = (int(part) for part in [*version.split("."), "0"])
    if (major, minor) < (7, 0):
        raise RuntimeError(f"the helper index needs Redis 7.0 or later; this server is {version}")


@dataclass(frozen=True, slots=True)
class _Load:
    commands: Commands  # the profile writes
    records: int
    unreadable: int
    done: bool  # the planner's last


class _Planner:
    """A planner process's state: its partitions' reader, on its own event loop, and the
    index it builds."""

    def __init__(
        self, bootstrap: str, topic: str, partitions: list[int], prefix: str, chunk: int
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.source = (bootstrap, topic, partitions)
        self.reader: TopicReader | None = None  # made on the loop, as aiokafka requires
        self.builder = IndexBuilder(prefix)
        self.chunk = chunk
        self.own: Entries = {}  # its share of the sets' entries, while it waits for the others'

    async def next_load(self) -> _Load:
        if self.reader is None:
            self.reader = TopicReader(*self.source)
            await self.reader.start()
        reader = self.reader
        raw: list[ConsumerRecord[bytes, bytes]] = []
        while not reader.done and len(raw) < self.chunk:
            for batch in await reader.read(self.chunk - len(raw)):
                raw += batch
        commands, unreadable = _plan(self.builder, raw)
        if reader.done:
            await reader.stop()
        return _Load(commands, len(raw), unreadable, reader.done)


_planner: _Planner | None = None


def _start_planner(
    bootstrap: str, topic: str, partitions: list[int], prefix: str, chunk: int
) -> None:
    global _planner
    # No cycle collector: what a planner makes is freed by reference counting or kept until
    # it ends (a minute or so), and collections walked its millions of kept objects again and
    # again: 10% of its CPU (42-47 s for 1M helpers instead of 49-54 s, runs alternated;
    # freezing the kept objects after each load did not give that back).
    gc.disable()
    _planner = _Planner(bootstrap, topic, partitions, prefix, chunk)


def _next_load() -> _Load:
    assert _planner is not None
    return _planner.loop.run_until_complete(_planner.next_load())


def _plan(
    builder: IndexBuilder, records: list[ConsumerRecord[bytes, bytes]]
) -> tuple[Commands, int]:
    """The profile writes of raw records, and how many were unreadable (logged, and skipped
    as the index handler skips them: the helper's previous version stands)."""
    changes: list[tuple[str, str, dict[str, Any] | None]] = []
    unreadable = 0

    def skip(where: str, exc: Exception) -> None:
        nonlocal unreadable
        unreadable += 1
        log.error("skipping unreadable helper record %s: %r", where, exc)

    for r in records:
        org, _, helper_id = (r.key or b"").decode("utf-8", "replace").partition("/")
        try:
            changes.append((org, helper_id, None if r.value is None else orjson.loads(r.value)))
        except orjson.JSONDecodeError as exc:
            skip(f"at {r.partition}/{r.offset}", exc)
    commands = builder.plan(changes, lambda org, helper_id, exc: skip(f"{org}/{helper_id}", exc))
    return commands, unreadable


def _swap_out(me: int) -> list[bytes]:
    """In planner `me`, once every record is planned: the sets' entries for each other
    planner, pickled here (the matching process only hands the bytes on); its own share
    stays here."""
    assert _planner is not None
    parts = _planner.builder.entries(PLANNERS)
    _planner.own = parts[me]
    return [b"" if n == me else pickle.dumps(part, protocol=5) for n, part in enumerate(parts)]


def _set_writes(theirs: list[bytes]) -> Commands:
    """In a planner: the writes of its share of the sets, its entries and the others'."""
    assert _planner is not None
    parts = [_planner.own, *(pickle.loads(part) for part in theirs if part)]
    return set_writes(_planner.builder.prefix, parts)


def _leave() -> None:
    """Ends the planner at once: tearing down its million objects one by one on the way out
    took seconds, and the memory goes back to the system either way."""
    os._exit(0)
