"""What many deliveries ask of Redis and Kafka at about the same moment goes as one batch.

A batch of records starts hundreds of deliveries at once, and each asks Redis for a contact,
a claim and, later, a sent key, and publishes a report. One round trip per command would cost
more than the webhook itself; gathered per event-loop turn they cost one round trip (one Redis
pipeline, one wait for Kafka's acknowledgements) for the lot, while each delivery still reads as
a plain `await`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from leanon_shared.cloudevents import CloudEvent
from leanon_shared.kafka import EventBus

Command = Callable[[Pipeline], object]


class CoalescingRedis:
    """Commands may call scripts by `evalsha` without registering them on the pipeline (which
    would ask SCRIPT EXISTS on every pipeline): when Redis has lost them (a restart), the
    affected commands fail once, the scripts are loaded again, and their callers retry."""

    def __init__(
        self,
        redis: Redis,
        scripts: tuple[str, ...] = (),
        max_batch: int = 2000,
        timeout_s: float = 10.0,
    ) -> None:
        self._r = redis
        self._timeout_s = timeout_s  # for the whole pipeline: `redis` may have no read timeout
        self._scripts = scripts
        self._max = max_batch
        self._pending: list[tuple[Command, asyncio.Future[Any] | None]] = []
        self._scheduled = False

    async def __call__(self, command: Command) -> Any:
        """Queue `command(pipe)` for the next pipeline; returns its reply (or raises its error)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue(command, future)
        return await future

    def soon(self, command: Command) -> None:
        """Queue `command(pipe)` for the next pipeline and wait for nothing: for a write whose
        loss costs only a little repeated work (it is never retried)."""
        self._queue(command, None)

    def _queue(self, command: Command, future: asyncio.Future[Any] | None) -> None:
        self._pending.append((command, future))
        if len(self._pending) >= self._max:
            self._flush_now()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._execute(batch))
            task.add_done_callback(_quiet)

    async def _execute(self, batch: list[tuple[Command, asyncio.Future[Any] | None]]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._r.pipeline(transaction=False) as pipe:
                    for command, _ in batch:
                        command(pipe)
                    replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(exc)
            return
        if any(isinstance(reply, NoScriptError) for reply in replies):
            for script in self._scripts:
                await self._r.script_load(script)
        for (_, future), reply in zip(batch, replies, strict=True):
            if future is None or future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


class CoalescingPublisher:
    """Publishes to one topic; events published in the same turn share one acknowledgement
    wait. Each caller returns only once Kafka has its event."""

    def __init__(self, bus: EventBus, topic: str) -> None:
        self._bus = bus
        self._topic = topic
        self._pending: list[tuple[CloudEvent, str | None, asyncio.Future[None]]] = []
        self._scheduled = False

    async def __call__(self, event: CloudEvent, key: str | None) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((event, key, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_now)
        await future

    def _flush_now(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            asyncio.ensure_future(self._publish(batch)).add_done_callback(_quiet)

    async def _publish(
        self, batch: list[tuple[CloudEvent, str | None, asyncio.Future[None]]]
    ) -> None:
        try:
            await self._bus.publish_many(self._topic, [(e, k) for e, k, _ in batch])
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, _, future in batch:
            if not future.done():
                future.set_result(None)


def _quiet(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # errors went to every waiting future already
