"""The floor for the notification benchmark: the least any notification service must do per
event, on LeanOn's own stack (aiokafka, uvloop, the same webhook client and batching).

Each worker process consumes `{prefix}minimal.events` with the same pipelined consumer
(a task per record, offsets committed behind the oldest unfinished one), decodes the event,
posts it as a signed webhook, publishes a small report (acks=all) and is done. No contact
book, no dedupe keys in Redis, no retry topics, limits or metrics: whatever LeanOn spends
beyond this is its own cost, and whatever this cannot do, no notification service built on
this stack can do on this machine. The webhook URL comes from the event itself: helper
`{phase}-{i}` is posted to `{sink}/{phase}/h{i}`, where the bench's sink counts it.

    python bench/minimal_notification.py SINK_URL [WORKERS]   # LEANON_* settings as the services
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys

import orjson
import uvloop
from aiokafka import ConsumerRecord

from leanon_notification.consumer import PipelinedConsumer
from leanon_notification.webhooks import WebhookSender
from leanon_shared import cloudevents
from leanon_shared.coalesce import CoalescingPublisher
from leanon_shared.kafka import EventBus
from leanon_shared.runtime import tune_gc
from leanon_shared.settings import LeanOnSettings

IN_FLIGHT = 500  # per worker, as the bench's raw client


def topic(prefix: str) -> str:
    return f"{prefix}minimal.events"


def group(prefix: str) -> str:
    return f"{prefix}minimal"


async def work(sink: str, secret: bytes) -> None:
    settings = LeanOnSettings()
    prefix = settings.topic_prefix
    bus = EventBus(settings, "bench-minimal-notification")
    await bus.start()
    report = CoalescingPublisher(bus, f"{prefix}minimal.reports")
    # every post goes straight out: no per-host cap, since there is no retry topic to defer to
    sender = WebhookSender(secret, frozenset({"127.0.0.1"}), 5.0, per_host=10**9)
    await sender.start()

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        event = cloudevents.decode(record.value, record.headers)
        helper = event.data.get("helper_id") if isinstance(event.data, dict) else None
        if not helper:
            return
        phase, i = str(helper).rsplit("-", 1)
        outcome = await sender.send(f"{sink}/{phase}/h{i}", cloudevents.to_json_bytes(event))
        await report(orjson.dumps({"event": event.id, "delivered": outcome.delivered}), None, [])

    consumer = PipelinedConsumer(
        bootstrap=settings.kafka_bootstrap,
        topics=[topic(prefix)],
        group_id=group(prefix),
        client_id="bench-minimal-notification",
        handle=handle,
        max_in_flight=IN_FLIGHT,
    )
    await consumer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await consumer.stop()
    await sender.stop()
    await bus.stop()


def worker(sink: str, secret: bytes) -> None:
    tune_gc()
    uvloop.run(work(sink, secret))


def main() -> None:
    sink = sys.argv[1]
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    key = os.environ["LEANON_WEBHOOK_SECRET"].encode()  # the bench's secret, as the service's
    ctx = multiprocessing.get_context("spawn")
    processes = [ctx.Process(target=worker, args=(sink, key)) for _ in range(workers)]
    for process in processes:
        process.start()

    def forward(signum: int, _: object) -> None:
        for process in processes:
            if process.pid is not None:
                process.terminate()

    signal.signal(signal.SIGTERM, forward)
    for process in processes:
        process.join()


if __name__ == "__main__":
    main()
