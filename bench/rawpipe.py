"""One hop of the raw-Kafka ceiling for bench/e2e.py, run as its own process like a service.

Consume a batch, produce every record on (acks=all, idempotent, linger 5 ms, as LeanOn's
producers), wait for the acknowledgements, commit; no framework, no validation, no Redis.

    python bench/rawpipe.py BOOTSTRAP SOURCE SINK GROUP
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def hop(bootstrap: str, source: str, sink: str, group: str) -> None:
    """The hop as a process: runs until SIGTERM or SIGINT, says "ready" once it consumes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_hop(bootstrap, source, sink, group, stop, on_ready=lambda: print("ready", flush=True))


async def run_hop(
    bootstrap: str,
    source: str,
    sink: str,
    group: str,
    stop: asyncio.Event,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Consume, produce each record on, wait for the acks, commit; until `stop` is set."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await consumer.start()
    await producer.start()
    if on_ready is not None:
        on_ready()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50, max_records=500)
            futures = [
                await producer.send(sink, r.value, key=r.key, headers=list(r.headers))
                for records in batches.values()
                for r in records
            ]
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    import uvloop  # the services run on uvloop; so does their ceiling

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(hop(*sys.argv[1:5]))


if __name__ == "__main__":
    main()
