"""Timed offset commits on real Kafka: flushed when idle, on stop and before a rebalance takes
partitions away; never past a batch whose handler raised; nothing lost when a process dies."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from leanon_shared.commits import COMMIT_EVERY_S, RETRY_FIRST_S, TimedCommitSubscriber
from leanon_shared.kafka import EventBus, make_broker, subscribe_batches
from leanon_shared.settings import LeanOnSettings
from tests.conftest import ROOT, Infra, committed_offsets, wait_for

Records = Sequence[ConsumerRecord[bytes, bytes]]
# Long enough that, within a test, the timer commits nothing after a subscriber's first batch:
# whatever else reaches Kafka was committed on stop or on revocation.
NEVER_S = 600.0


def settings(infra: Infra, prefix: str) -> LeanOnSettings:
    return LeanOnSettings(
        kafka_bootstrap=infra.kafka_bootstrap, redis_url=infra.redis_url, topic_prefix=prefix
    )


async def make_topic(infra: Infra, name: str, partitions: int) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def produce(bus: EventBus, topic: str, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        await bus.send_raw(topic, f"m{i}".encode(), f"k{i}".encode())


async def filled(
    infra: Infra, prefix: str, partitions: int, count: int
) -> tuple[str, str, dict[int, int]]:
    """A new topic holding `count` records, a group name for it, and its end offsets."""
    topic, group = await make_topic(infra, f"{prefix}work", partitions), f"{prefix}g"
    bus = EventBus(settings(infra, prefix), "test")
    await bus.start()
    try:
        await produce(bus, topic, count)
    finally:
        await bus.stop()
    return topic, group, await end_offsets(infra, topic, partitions)


async def end_offsets(infra: Infra, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.kafka_bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()
    return {tp.partition: end for tp, end in ends.items() if end > 0}


@contextlib.asynccontextmanager
async def consuming(
    infra: Infra, prefix: str, topic: str, group: str, seen: list[tuple[int, int]], **options: Any
) -> AsyncIterator[TimedCommitSubscriber]:
    """A started subscriber that records (partition, offset) of every record it handled."""

    async def handle(records: Records) -> None:
        seen.extend((r.partition, r.offset) for r in records)

    broker = make_broker(settings(infra, prefix), "test")
    subscriber = subscribe_batches(broker, topic, group, handle, **options)
    await broker.start()
    try:
        yield subscriber
    finally:
        await broker.stop()


async def test_offsets_are_committed_once_traffic_stops(infra: Infra, prefix: str) -> None:
    topic, group, ends = await filled(infra, prefix, 3, 60)
    seen: list[tuple[int, int]] = []
    commits = 0
    async with consuming(infra, prefix, topic, group, seen, max_records=1) as subscriber:
        assert subscriber.consumer is not None
        commit = subscriber.consumer.commit

        async def counted(offsets: Any = None) -> None:
            nonlocal commits
            commits += 1
            await commit(offsets)

        subscriber.consumer.commit = counted  # type: ignore[method-assign]
        await wait_for(lambda: len(seen) == 60, what="all 60 records, one per batch")
        first_done = time.monotonic()
        # No further traffic: only a commit made while idle brings the lag to 0.
        await wait_for(lambda: _equal(committed_offsets(infra, group), ends), what="lag 0")
        took = time.monotonic() - first_done
    # 60 batches, but at most one commit per interval (a commit per batch would be 60).
    assert commits <= 2 + (took + 0.5) / COMMIT_EVERY_S
    assert commits < 30


async def test_graceful_stop_commits_what_is_finished(infra: Infra, prefix: str) -> None:
    topic, group, ends = await filled(infra, prefix, 2, 30)
    seen: list[tuple[int, int]] = []
    async with consuming(
        infra, prefix, topic, group, seen, max_records=5, commit_every_s=NEVER_S
    ) as subscriber:
        await wait_for(lambda: len(seen) == 30, what="all 30 records")
        # Only the first batch was committed by the timer.
        assert sum((await committed_offsets(infra, group)).values()) <= 5
        assert subscriber.offsets.pending
    assert await committed_offsets(infra, group) == ends


async def test_a_raising_handler_gets_its_batch_again_and_no_commit_passes_it(
    infra: Infra, prefix: str
) -> None:
    topic, group = await make_topic(infra, f"{prefix}work", 1), f"{prefix}g"
    bus = EventBus(settings(infra, prefix), "test")
    await bus.start()
    await produce(bus, topic, 20)
    await bus.stop()
    handled: list[int] = []
    failed_from: list[int] = []  # the first offset of each batch that raised
    failed_at: list[float] = []
    failing = True

    async def handle(records: Records) -> None:
        offsets = [r.offset for r in records]
        if failing and 10 in offsets:
            failed_from.append(offsets[0])
            failed_at.append(time.monotonic())
            raise ConnectionError("redis went away for a moment")
        handled.extend(offsets)

    broker = make_broker(settings(infra, prefix), "test")
    subscribe_batches(broker, topic, group, handle, max_records=3)
    await broker.start()
    try:
        await wait_for(lambda: len(failed_from) >= 3, what="the failing batch three times")
        first = failed_from[0]
        assert 8 <= first <= 10 and set(failed_from) == {first}  # the same batch, from its start
        # What finished before it is committed (while idle: the same batch fails meanwhile),
        # and nothing past its first record, however often it fails.
        await wait_for(lambda: _equal(committed_offsets(infra, group), {0: first}), what="commit")
        seen_failing = len(failed_from)
        await wait_for(lambda: len(failed_from) >= seen_failing + 3, what="three more failures")
        assert await committed_offsets(infra, group) == {0: first}
        assert handled == list(range(first))
        # Each retry waits longer (RETRY_FIRST_S doubled per failure): the sixth comes at
        # least 0.8 s after the fifth, where without a back-off it came within milliseconds.
        gaps = [b - a for a, b in itertools.pairwise(failed_at)]
        assert gaps[4] >= 16 * RETRY_FIRST_S * 0.9 and gaps[4] > gaps[0], gaps
        failing = False
        await wait_for(
            lambda: _equal(committed_offsets(infra, group), {0: 20}), what="all committed"
        )
    finally:
        await broker.stop()
    assert handled == list(range(20))  # in order, each once


async def test_a_killed_consumer_loses_nothing(infra: Infra, prefix: str) -> None:
    topic, group, ends = await filled(infra, prefix, 2, 200)
    # The child handles 5 records per batch and commits only its first batch (NEVER_S), so
    # most of what it finished is uncommitted when it is killed.
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.killable_consumer",
        infra.kafka_bootstrap,
        topic,
        group,
        str(NEVER_S),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    by_child: list[tuple[int, int]] = []

    async def read() -> None:
        assert child.stdout is not None
        async for line in child.stdout:
            partition, offset = line.split()
            by_child.append((int(partition), int(offset)))

    reader = asyncio.create_task(read())
    try:
        await wait_for(lambda: len(by_child) >= 40, timeout=40, what="the child mid-stream")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        await child.wait()
        await reader
    at_kill = await committed_offsets(infra, group)
    finished = _next_per_partition(by_child)
    for partition, offset in at_kill.items():  # never committed past what it had finished
        assert offset <= finished.get(partition, 0)
    assert sum(at_kill.values()) < len(by_child)  # so some finished work was not committed

    by_next: list[tuple[int, int]] = []
    # The killed member stays in the group until its session times out (10 s): only then
    # does the rebalance give its partitions to the next one.
    async with consuming(infra, prefix, topic, group, by_next):
        await wait_for(
            lambda: _covers(by_child + by_next, ends), timeout=40, what="every record handled"
        )
    starts = {p: min(o for q, o in by_next if q == p) for p in {p for p, _ in by_next}}
    assert starts == {p: at_kill.get(p, 0) for p in starts}  # from the last commit, no gap
    assert set(by_child) & set(by_next)  # finished but uncommitted: delivered again


async def test_a_consumer_joining_the_group_sees_no_gap(infra: Infra, prefix: str) -> None:
    topic, group = await make_topic(infra, f"{prefix}work", 3), f"{prefix}g"
    bus = EventBus(settings(infra, prefix), "test")
    await bus.start()
    await produce(bus, topic, 60)
    by_a: list[tuple[int, int]] = []
    by_b: list[tuple[int, int]] = []
    # Neither commits on its timer after its first batch: without a commit on revocation the
    # newcomer would start from those first commits and handle again what A had finished.
    paced = dict(max_records=5, commit_every_s=NEVER_S)
    async with consuming(infra, prefix, topic, group, by_a, **paced):
        await wait_for(lambda: len(by_a) == 60, what="A handled the first 60")
        assert sum((await committed_offsets(infra, group)).values()) <= 5

        stop = asyncio.Event()

        async def trickle() -> None:  # records keep coming while the group rebalances
            for start in itertools.count(60, 5):
                if stop.is_set():
                    return
                await produce(bus, topic, 5, start=start)
                await asyncio.sleep(0.02)  # pacing the producer, not waiting for a condition

        producing = asyncio.create_task(trickle())
        async with consuming(infra, prefix, topic, group, by_b, **paced):
            await wait_for(lambda: len(by_b) >= 20, timeout=40, what="the newcomer handling")
            stop.set()
            await producing
            ends = await end_offsets(infra, topic, 3)
            await wait_for(lambda: _covers(by_a + by_b, ends), timeout=40, what="all records")
    await bus.stop()
    twice = [tp for tp, n in Counter(by_a + by_b).items() if n > 1]
    assert twice == []  # A committed what it finished before giving its partitions up


async def _equal(got: Any, want: dict[int, int]) -> bool:
    return bool(await got == want)


def _next_per_partition(seen: list[tuple[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for partition, offset in seen:
        out[partition] = max(out.get(partition, 0), offset + 1)
    return out


def _covers(seen: list[tuple[int, int]], ends: dict[int, int]) -> bool:
    """Every offset of every partition up to its end was handled: nothing lost, no gap."""
    have = set(seen)
    return all((p, o) in have for p, end in ends.items() for o in range(end))
