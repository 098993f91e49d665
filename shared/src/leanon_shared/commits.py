"""When a batch subscriber commits: finished offsets, per partition, on a timer.

FastStream's batch subscriber commits after every batch (one round trip to Kafka each, however
small the batch) and, after an empty poll, sleeps before polling again. Ours polls without the
sleep (aiokafka's getmany returns as soon as its fetcher has records, so a long poll costs no
latency and an idle subscriber wakes once a second instead of a hundred times) and commits, at
most once per `commit_every_s`, the offset after the last record of each partition whose
handler has finished. Finished offsets are also committed when the subscriber goes idle (the
poll wakes when the next commit is due), before its partitions are revoked in a rebalance, and
on graceful stop. A batch whose handler raises is never marked finished: its partitions are
rewound to its first record, so it comes again, after a growing back-off, and no commit
passes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Sequence
from itertools import chain
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from faststream.kafka.subscriber.usecase import BatchSubscriber

log = logging.getLogger(__name__)
Records = Sequence[ConsumerRecord[bytes, bytes]]
# A finished record waits at most this long for its commit: consumer lag reaches 0 within it
# after traffic stops, and a crash redelivers at most this much finished work. Commits fall to
# at most 5 a second per subscriber however many batches go through.
COMMIT_EVERY_S = 0.2
# The poll's timeout when nothing waits to be committed. Records end it as soon as they arrive,
# so it costs no latency; it only sets how often an idle subscriber wakes for nothing.
IDLE_POLL_MS = 1_000
# After a handler raises, the batch comes again after this pause, doubled at each failure in a
# row up to the cap: a store that is down is not hammered, nor the log flooded, meanwhile.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0


class FinishedOffsets:
    """Per partition, the offset after the last record whose handler finished, and the offset
    Kafka has from us.

    A generation ends at every revocation: a batch fetched in an earlier generation finishes
    into nothing, so no commit is made for a partition another member may own by now.
    """

    def __init__(self) -> None:
        self.generation = 0
        self._finished: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def finish(self, records: Records, generation: int) -> None:
        if generation != self.generation:
            return
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if record.offset >= self._finished.get(tp, 0):
                self._finished[tp] = record.offset + 1

    @property
    def pending(self) -> bool:
        return any(self._committed.get(tp) != at for tp, at in self._finished.items())

    def uncommitted(self, among: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        return {
            tp: at
            for tp, at in self._finished.items()
            if tp in among and self._committed.get(tp) != at
        }

    def committed(self, offsets: dict[TopicPartition, int], generation: int) -> None:
        if generation == self.generation:
            self._committed.update(offsets)

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        self.generation += 1
        for tp in partitions:
            self._finished.pop(tp, None)
            self._committed.pop(tp, None)


class TimedCommitSubscriber(BatchSubscriber):
    """FastStream's batch subscriber with our poll, commits and stop (see the module docstring).

    FastStream builds its subscriber classes itself and has no hook for a subclass, so
    `adopt` turns the one `broker.subscriber(...)` made into this class; the state lives in
    the instance dict FastStream's endpoints keep.
    """

    __slots__ = ()
    offsets: FinishedOffsets
    commit_every_s: float
    graceful_s: float
    _next_commit: float
    _idle: asyncio.Event
    _fetched_in: int  # the generation the batch in hand was fetched in
    _failures: int  # handler failures in a row

    @classmethod
    def adopt(
        cls, subscriber: BatchSubscriber, commit_every_s: float, graceful_s: float
    ) -> TimedCommitSubscriber:
        if type(subscriber) is not BatchSubscriber:
            raise TypeError(f"expected FastStream's BatchSubscriber, got {type(subscriber)}")
        subscriber.__class__ = cls
        assert isinstance(subscriber, cls)
        subscriber.offsets = FinishedOffsets()
        subscriber.commit_every_s = commit_every_s
        subscriber.graceful_s = graceful_s
        subscriber._next_commit = 0.0  # the first batch after a quiet spell commits at once
        subscriber._idle = asyncio.Event()
        subscriber._idle.set()
        subscriber._fetched_in = 0
        subscriber._failures = 0
        return subscriber

    async def get_msg(self, consumer: AIOKafkaConsumer) -> tuple[ConsumerRecord[Any, Any], ...]:
        """The next batch, or () when the poll ends empty; commits on the way when one is due,
        and after a failed batch first waits its back-off."""
        if self.offsets.pending and time.monotonic() >= self._next_commit:
            await self.commit()
        if self._failures:
            await asyncio.sleep(min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self._failures - 1)))
        timeout_ms: float = IDLE_POLL_MS
        if self.offsets.pending:  # wake when the commit falls due, even if nothing arrives
            timeout_ms = min(timeout_ms, max(0.0, self._next_commit - time.monotonic()) * 1000)
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_records)
        self._fetched_in = self.offsets.generation
        return tuple(chain.from_iterable(batches.values()))

    async def consume_one(self, msg: tuple[ConsumerRecord[Any, Any], ...]) -> None:
        # No await between get_msg returning and this: a revocation sees the batch as in hand.
        self._idle.clear()
        try:
            await super().consume_one(msg)
        finally:
            self._idle.set()

    def finished(self, records: Records) -> None:
        """The handler is done with `records`: they may be committed."""
        self._failures = 0
        self.offsets.finish(records, self._fetched_in)

    def rewind(self, records: Records) -> None:
        """The handler raised: fetch `records` again from the first of each partition, after
        a back-off that grows while the failures go on."""
        self._failures += 1
        if self.consumer is None or self._fetched_in != self.offsets.generation:
            return  # revoked meanwhile: whoever owns them now starts from the last commit
        first: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first[tp] = min(record.offset, first.get(tp, record.offset))
        assigned = self.consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self.consumer.seek(tp, offset)

    async def commit(self, only: Collection[TopicPartition] | None = None) -> None:
        """Commit finished offsets of assigned partitions (of `only` if given); a failure is
        logged and left to the next commit, which carries the same offsets or later ones."""
        self._next_commit = time.monotonic() + self.commit_every_s
        consumer = self.consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        generation = self.offsets.generation
        offsets = self.offsets.uncommitted(assigned if only is None else assigned & set(only))
        if not offsets:
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(at, "") for tp, at in offsets.items()})
        except KafkaError as exc:  # e.g. a rebalance under way: the next owner starts earlier
            log.warning("offset commit failed (%s); a later one carries it", type(exc).__name__)
            return
        self.offsets.committed(offsets, generation)

    async def _finish_in_hand_and_commit(
        self, only: Collection[TopicPartition] | None = None
    ) -> None:
        """Wait (bounded) for the batch in hand, then commit. Bounded, because a handler that
        hangs must not hold up a rebalance or a stop for ever: its batch then comes again."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.graceful_s):
                await self._idle.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.graceful_s):
                await self.commit(only)

    async def revoked(self, partitions: Collection[TopicPartition]) -> None:
        await self._finish_in_hand_and_commit(partitions)
        self.offsets.forget(partitions)

    async def stop(self) -> None:
        """Take no further batch, let the one in hand finish, commit, then FastStream's stop."""
        if self.consumer is not None and self.running:
            self.running = False  # FastStream's loop and consume() check it before each batch
            await self._finish_in_hand_and_commit()
        await super().stop()


class CommitBeforeRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits what is finished before a rebalance gives the partitions to someone else."""

    def __init__(self) -> None:
        self.subscriber: TimedCommitSubscriber | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.subscriber is not None:
            await self.subscriber.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None  # positions come from the committed offsets
