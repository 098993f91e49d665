"""The notification consumer's in-flight bookkeeping across a revocation, without Kafka."""

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from leanon_notification.consumer import PipelinedConsumer

TP = TopicPartition("events", 0)


async def test_a_task_outliving_a_revocation_leaves_its_redelivered_copy_in_flight() -> None:
    releases: list[asyncio.Event] = []
    started = asyncio.Condition()

    async def handle(record: Any) -> None:
        release = asyncio.Event()
        async with started:
            releases.append(release)
            started.notify_all()
        await release.wait()

    async def attempts(n: int) -> None:
        async with started:
            await asyncio.wait_for(started.wait_for(lambda: len(releases) == n), timeout=5)

    consumer = PipelinedConsumer(
        bootstrap="unused",
        topics=["events"],
        group_id="g",
        client_id="c",
        handle=handle,
        max_in_flight=10,
        graceful_s=0.05,
    )
    record = SimpleNamespace(topic="events", partition=0, offset=7)
    await consumer._slots.acquire()
    consumer._dispatch(TP, record)  # type: ignore[arg-type]
    [first] = consumer._tasks
    await attempts(1)  # the handler has started and waits
    # Revoked while the handler is still running (the wait is bounded), then assigned back:
    # the record comes again and runs beside the first attempt.
    await consumer.on_revoked({TP})
    await consumer._slots.acquire()
    consumer._dispatch(TP, record)  # type: ignore[arg-type]
    [copy] = consumer._tasks - {first}
    await attempts(2)
    assert consumer._position(TP) == 7

    releases[0].set()  # the attempt from before the revocation finishes
    await asyncio.wait_for(first, timeout=5)
    assert consumer._position(TP) == 7, "a commit now would pass the copy still in flight"

    releases[1].set()
    await asyncio.wait_for(copy, timeout=5)
    assert consumer._position(TP) == 8
