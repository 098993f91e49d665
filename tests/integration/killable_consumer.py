"""A subscribe_batches consumer run as its own process, to be SIGKILLed by a test.

Usage: python -m tests.integration.killable_consumer BOOTSTRAP TOPIC GROUP COMMIT_EVERY_S
Prints "partition offset" of each record once its batch is handled; runs until killed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from aiokafka import ConsumerRecord

from leanon_shared.kafka import make_broker, subscribe_batches
from leanon_shared.settings import LeanOnSettings


async def main(bootstrap: str, topic: str, group: str, commit_every_s: float) -> None:
    settings = LeanOnSettings(kafka_bootstrap=bootstrap, topic_prefix="killable.")

    async def handle(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        await asyncio.sleep(0.02)  # a little work per batch, so the kill lands mid-stream
        sys.stdout.write("".join(f"{r.partition} {r.offset}\n" for r in records))
        sys.stdout.flush()

    broker = make_broker(settings, "killable")
    subscribe_batches(broker, topic, group, handle, max_records=5, commit_every_s=commit_every_s)
    await broker.start()
    await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
