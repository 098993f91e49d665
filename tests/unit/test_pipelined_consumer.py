"""The notification consumer's in-flight bookkeeping across a revocation, and for records
started as a batch, without Kafka."""

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from leanon_notification.consumer import PipelinedConsumer
from tests.conftest import wait_for

TP = TopicPartition("events", 0)


def consumer_for(handle: Any, start_batch: Any = None) -> PipelinedConsumer:
    return PipelinedConsumer(
        bootstrap="unused",
        topics=["events"],
        group_id="g",
        client_id="c",
        handle=handle,
        start_batch=start_batch,
        max_in_flight=10,
        graceful_s=0.05,
    )


def record(offset: int) -> Any:
    return SimpleNamespace(topic="events", partition=0, offset=offset)


@pytest.mark.parametrize("batched", [False, True], ids=["a task each", "as a batch"])
async def test_a_task_outliving_a_revocation_leaves_its_redelivered_copy_in_flight(
    batched: bool,
) -> None:
    releases: list[asyncio.Event] = []
    started = asyncio.Condition()

    async def handle(record: Any) -> None:
        release = asyncio.Event()
        async with started:
            releases.append(release)
            started.notify_all()
        await release.wait()

    def start_batch(records: Sequence[Any]) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(handle(r)) for r in records]

    async def attempts(n: int) -> None:
        async with started:
            await asyncio.wait_for(started.wait_for(lambda: len(releases) == n), timeout=5)

    consumer = consumer_for(handle, start_batch if batched else None)
    await consumer._slots.acquire()
    consumer._start([(TP, record(7))])
    [first] = consumer._tasks
    await attempts(1)  # the handler has started and waits
    # Revoked while the handler is still running (the wait is bounded), then assigned back:
    # the record comes again and runs beside the first attempt.
    await consumer.on_revoked({TP})
    await consumer._slots.acquire()
    consumer._start([(TP, record(7))])
    [copy] = consumer._tasks - {first}
    await attempts(2)
    assert consumer._position(TP) == 7

    releases[0].set()  # the attempt from before the revocation finishes
    await asyncio.wait_for(first, timeout=5)
    assert consumer._position(TP) == 7, "a commit now would pass the copy still in flight"

    releases[1].set()
    await asyncio.wait_for(copy, timeout=5)
    assert consumer._position(TP) == 8


async def test_a_record_whose_batch_failed_is_handled_on_its_own_and_the_rest_are_not() -> None:
    handled: list[int] = []

    async def handle(record: Any) -> None:
        handled.append(record.offset)

    async def first_attempt(record: Any) -> None:
        if record.offset == 5:
            raise ConnectionError("Redis went away")

    def start_batch(records: Sequence[Any]) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(first_attempt(r)) for r in records]

    consumer = consumer_for(handle, start_batch)
    for _ in range(3):
        await consumer._slots.acquire()
    consumer._start([(TP, record(4)), (TP, record(5)), (TP, record(6))])

    # the retry waits its 0.1 s backoff first
    await wait_for(lambda: not consumer._tasks and consumer._position(TP) == 7, timeout=5)
    assert handled == [5], "only the failed record is handled again"
    assert consumer._slots._value == 10, "every slot is given back"  # type: ignore[attr-defined]
