"""Replaying a topic from its start, for read models that Redis may lose.

Redis holds derived state only. When it comes back empty, the service that owns a read model
replays the topic it is built from, up to the end offsets at the time of the call, before it
serves from it. One instance replays (a lock in Redis); the others wait for the marker.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

log = logging.getLogger(__name__)
LOCK_TTL_S = 60
WAIT_FOR_OTHER_S = 1800
BatchApplier = Callable[[Sequence[ConsumerRecord[bytes, bytes]]], Awaitable[None]]


async def replay(
    bootstrap: str,
    topic: str,
    apply: BatchApplier,
    on_progress: Callable[[int], Awaitable[None]] | None = None,
) -> int:
    """Apply every record of the topic, partition by partition in order; returns the count."""
    records, last_report = 0, time.monotonic()
    async with TopicReader(bootstrap, topic) as reader:
        while not reader.done:
            for batch in await reader.read():
                await apply(batch)
                records += len(batch)
            if on_progress is not None and time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                await on_progress(records)
    return records


class TopicReader:
    """Reads a topic's partitions (all, or those given) from their start up to their end
    offsets as of entering; done once every partition has been read that far."""

    def __init__(
        self, bootstrap: str, topic: str, partitions: Collection[int] | None = None
    ) -> None:
        self._bootstrap, self._topic, self._only = bootstrap, topic, partitions
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        self._end: dict[TopicPartition, int] = {}
        self._todo: set[TopicPartition] = set()

    async def __aenter__(self) -> TopicReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._consumer.start()
        try:
            partitions = await partitions_of(self._bootstrap, self._topic)
            if self._only is not None:
                partitions = [tp for tp in partitions if tp.partition in self._only]
            if partitions:
                self._consumer.assign(partitions)
                await self._consumer.seek_to_beginning(*partitions)
                self._end = await self._consumer.end_offsets(partitions)
                self._todo = {tp for tp in partitions if self._end[tp] > 0}
        except BaseException:
            await self._consumer.stop()
            raise

    async def stop(self) -> None:
        await self._consumer.stop()

    @property
    def done(self) -> bool:
        return not self._todo

    async def read(self, max_records: int = 10_000) -> list[Sequence[ConsumerRecord[bytes, bytes]]]:
        """The next records, one batch per partition (none, when a second passes without)."""
        got = await self._consumer.getmany(*self._todo, timeout_ms=1000, max_records=max_records)
        out: list[Sequence[ConsumerRecord[bytes, bytes]]] = []
        for tp, batch in got.items():
            out.append([r for r in batch if r.offset < self._end[tp]])
            if await self._consumer.position(tp) >= self._end[tp]:
                self._todo.discard(tp)
        return out


async def partitions_of(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="leanon-replay")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"]) for d in described for p in d["partitions"]]


async def ensure_replayed(
    redis: Redis,
    marker_key: str,
    bootstrap: str,
    topic: str,
    apply: BatchApplier,
) -> int | None:
    """Replay into Redis unless the marker says it holds the read model; None when it did.

    The marker is written only after a full replay, so a crash midway replays again.
    """
    if await redis.exists(marker_key):
        return None
    lock_key, token = f"{marker_key}:lock", uuid.uuid4().hex
    started = time.monotonic()
    while not await redis.set(lock_key, token, nx=True, ex=LOCK_TTL_S):
        if await redis.exists(marker_key):
            return None
        if time.monotonic() - started > WAIT_FOR_OTHER_S:
            raise TimeoutError(f"another instance's replay of {topic} did not finish")
        await asyncio.sleep(0.5)
    try:
        if await redis.exists(marker_key):
            return None
        log.warning("read model missing from Redis: replaying %s", topic)

        async def progress(records: int) -> None:
            log.warning("replaying %s: %d records", topic, records)
            await redis.set(lock_key, token, ex=LOCK_TTL_S)

        records = await replay(bootstrap, topic, apply, progress)
        await redis.set(marker_key, b"1")
        log.warning("replayed %s: %d records in %.1fs", topic, records, time.monotonic() - started)
        return records
    finally:
        if await redis.get(lock_key) in (token, token.encode()):
            await redis.delete(lock_key)
