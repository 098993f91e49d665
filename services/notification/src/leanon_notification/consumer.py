"""A Kafka consumer that hands every record to its own task and commits behind the slowest.

Why not a batch subscriber: a batch commits only when its slowest delivery ends, and the next
batch waits for that, so one endpoint that takes its full timeout would hold up everyone behind
it. Here each record runs on its own (at most `max_in_flight` at once) and the committed offset
of a partition is that of its oldest unfinished record: a slow delivery delays only a commit,
never another delivery. After a crash, records past the commit come again and the dispatcher's
dedupe keys make that harmless.

With `start_batch`, the records of one fetch are started together (still a task each, each
done on its own), so that what they all need first can be had in one step: the dispatcher
decodes them and reads their contacts and claims their deliveries in one round trip to Redis.
A record whose task fails then goes on alone, with the usual retries.

With `due`, records that are not due yet (retry topics) are not fetched early: the consumer seeks
back to the first one, pauses its partition and resumes it when the record falls due. Other
partitions and topics go on meanwhile; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from leanon_shared.runtime import cancel_and_wait

log = logging.getLogger(__name__)
Record: TypeAlias = ConsumerRecord[bytes, bytes]
Handle = Callable[[Record], Awaitable[None]]
Due = Callable[[Record], float]  # epoch seconds when the record may be handled
Poison = Callable[[Record, Exception], Awaitable[None]]
Wanted = Callable[[Record], bool]  # cheap and synchronous: False skips the record outright
# Starts records fetched together: a task each, done when its record is handled. A record whose
# task fails is then handled on its own (`Handle`), with retries, as any other.
StartBatch = Callable[[Sequence[Record]], Sequence["asyncio.Task[None]"]]
# Failures of what a handler stands on (Redis, Kafka, the network): the record waits and tries
# again for as long as it takes. Anything else is a record that cannot be handled.
TRANSIENT: tuple[type[BaseException], ...] = (OSError, TimeoutError, KafkaError, RedisError)
POISON_AFTER = 3


class PipelinedConsumer:
    def __init__(
        self,
        *,
        bootstrap: str,
        topics: Sequence[str],
        group_id: str,
        client_id: str,
        handle: Handle,
        max_in_flight: int,
        commit_interval_s: float = 0.5,
        due: Due | None = None,
        poison: Poison | None = None,
        wanted: Wanted | None = None,
        start_batch: StartBatch | None = None,
        graceful_s: float = 15.0,
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = list(topics)
        self._group = group_id
        self._client_id = client_id
        self._handle = handle
        self._slots = asyncio.Semaphore(max_in_flight)
        self._commit_every = commit_interval_s
        self._due = due
        self._poison = poison
        self._wanted = wanted
        self._start_batch = start_batch
        self._graceful = graceful_s
        self._inflight: dict[TopicPartition, dict[int, None]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._timers: dict[TopicPartition, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._consumer: AIOKafkaConsumer | None = None
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=300_000,
        )
        self._consumer.subscribe(self._topics, listener=_Listener(self))
        await self._consumer.start()
        self._loop_task = asyncio.create_task(self._run(), name=f"consume:{self._group}")

    async def stop(self) -> None:
        """Stop fetching, let what is in flight finish (bounded), commit, leave the group."""
        self._stopping = True
        if self._loop_task is not None:
            await self._loop_task
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self._graceful)
            # not committed: they come again after a restart
            await asyncio.gather(*(cancel_and_wait(task) for task in pending))
        if self._consumer is not None:
            await self._commit()
            for timer in self._timers.values():
                timer.cancel()
            await self._consumer.stop()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "start() first"
        return self._consumer

    @property
    def running(self) -> bool:
        """Still consuming (for readiness): the fetch loop has not stopped."""
        return self._loop_task is not None and not self._loop_task.done()

    async def _run(self) -> None:
        last_commit = time.monotonic()
        while not self._stopping:
            try:
                batches = await self.consumer.getmany(timeout_ms=100, max_records=1000)
                ready: list[tuple[TopicPartition, Record]] = []
                try:
                    for tp, records in batches.items():
                        for record in records:
                            if self._due is not None and self._hold_until_due(tp, record):
                                break
                            if self._wanted is not None and not self._wanted(record):
                                self._next[tp] = record.offset + 1  # nothing to do: done
                                continue
                            if self._slots.locked() and ready:  # those waiting start now
                                self._start(ready)
                                ready = []
                            await self._slots.acquire()
                            ready.append((tp, record))
                finally:  # whatever happened, what holds a slot starts (and is marked in flight)
                    self._start(ready)
                if time.monotonic() - last_commit >= self._commit_every:
                    await self._commit()
                    last_commit = time.monotonic()
            except Exception as exc:  # never let the loop die quietly: the next fetch may work
                log.warning("consumer loop: %s; going on", type(exc).__name__)
                await asyncio.sleep(0.5)

    def _hold_until_due(self, tp: TopicPartition, record: Record) -> bool:
        assert self._due is not None
        wait = self._due(record) - time.time()
        if wait <= 0:
            return False
        self.consumer.seek(tp, record.offset)
        self.consumer.pause(tp)
        loop = asyncio.get_running_loop()
        if tp in self._timers:
            self._timers[tp].cancel()
        self._timers[tp] = loop.call_later(wait, self._resume, tp)
        return True

    def _resume(self, tp: TopicPartition) -> None:
        self._timers.pop(tp, None)
        if tp in self.consumer.assignment():
            self.consumer.resume(tp)

    def _start(self, ready: list[tuple[TopicPartition, Record]]) -> None:
        """Start records that each hold a slot: together when there is `start_batch`, else a
        task each."""
        if not ready:
            return
        marks = []
        for tp, record in ready:
            waiting = self._inflight.setdefault(tp, {})
            waiting[record.offset] = None
            self._next[tp] = max(self._next.get(tp, 0), record.offset + 1)
            marks.append(waiting)
        if self._start_batch is None:
            for (tp, record), waiting in zip(ready, marks, strict=True):
                self._track(asyncio.create_task(self._one(tp, record, waiting)))
            return
        tasks = self._start_batch([record for _, record in ready])
        for (tp, record), waiting, task in zip(ready, marks, tasks, strict=True):
            self._track(task)
            task.add_done_callback(functools.partial(self._started, tp, record, waiting))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _started(
        self, tp: TopicPartition, record: Record, waiting: dict[int, None], task: asyncio.Task[None]
    ) -> None:
        """A record started with its batch is done, or failed: then it goes on on its own."""
        if not task.cancelled() and isinstance(exc := task.exception(), Exception):
            self._track(asyncio.create_task(self._one(tp, record, waiting, exc)))
            return
        self._slots.release()
        if not task.cancelled():  # a cancelled record keeps its place, so no commit passes it
            waiting.pop(record.offset, None)

    async def _one(
        self,
        tp: TopicPartition,
        record: Record,
        waiting: dict[int, None],
        failed: Exception | None = None,
    ) -> None:
        """Handle one record until done (`failed`: how its first attempt, with its batch,
        ended); `waiting` is the partition's in-flight set as it was at dispatch. A
        revocation replaces it, so a task that outlives the revocation never clears the mark
        of its own redelivered copy, which a commit must not pass."""
        handled = False
        backoff = 0.1
        failures = 0
        try:
            while not handled:
                if failed is None:
                    try:
                        await self._handle(record)
                        handled = True
                        continue
                    except asyncio.CancelledError:
                        raise
                    except Exception as error:
                        failed = error
                problem, failed = failed, None
                failures += 1
                log.warning(
                    "record %s/%s failed (%s); retrying",
                    tp.partition,
                    record.offset,
                    type(problem).__name__,
                )
                if not isinstance(problem, TRANSIENT) and failures >= POISON_AFTER:
                    # It fails the same way each time: set it aside, never block on it.
                    if self._poison is not None:
                        await self._poison(record, problem)
                    handled = True
                    continue
                if self._stopping:
                    return
                # This record alone waits; its offset stays uncommitted until it is done.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        finally:
            self._slots.release()
            if handled:  # an abandoned record keeps its place, so no commit passes it
                waiting.pop(record.offset, None)

    def _position(self, tp: TopicPartition) -> int | None:
        waiting = self._inflight.get(tp)
        if waiting:
            return next(iter(waiting))
        return self._next.get(tp)

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        assigned = self.consumer.assignment()
        offsets = {}
        for tp in only or assigned:
            position = self._position(tp)
            if tp in assigned and position is not None and self._committed.get(tp) != position:
                offsets[tp] = position
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance under way: the next owner starts from before
            log.warning("commit failed (%s)", type(exc).__name__)
            return
        self._committed.update(offsets)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish (bounded) and commit what was taken from revoked partitions."""
        mine = [t for t in self._tasks if not t.done()]
        deadline = time.monotonic() + self._graceful
        while any(self._inflight.get(tp) for tp in revoked) and time.monotonic() < deadline:
            await asyncio.wait(mine, timeout=0.1)
            mine = [t for t in mine if not t.done()]
        with contextlib.suppress(Exception):
            await self._commit(revoked)
        for tp in revoked:
            self._inflight.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
            timer = self._timers.pop(tp, None)
            if timer is not None:
                timer.cancel()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: PipelinedConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.owner.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None
