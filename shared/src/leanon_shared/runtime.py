"""Serving a service: uvicorn on loopback with uvloop, graceful on SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import hiredis
import uvicorn
from redis.asyncio import BlockingConnectionPool, Connection, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.types import ASGIApp

log = logging.getLogger(__name__)


def tune_gc() -> None:
    """Collect young objects less often, and leave what exists at start-up out of collections:
    with caches of a hundred thousand objects, default thresholds spend milliseconds per
    request walking them."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def serve(
    app: ASGIApp, host: str, port: int, *, workers: int = 1, factory: str | None = None
) -> None:
    """Run until SIGTERM/SIGINT; uvicorn then stops accepting and runs the app's shutdown.

    With several workers, uvicorn forks processes that each build the app from `factory`
    ("module:function") and share the listening socket.
    """
    tune_gc()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": 20,
    }
    if workers > 1 and factory:
        uvicorn.run(factory, factory=True, workers=workers, **options)
        return
    uvicorn.Server(uvicorn.Config(app, **options)).run()


class HiredisPackingConnection(Connection):
    """redis-py's asyncio connection packs every command in Python, argument by argument:
    7% of matching's CPU at saturation went to packing its decision script's arguments.
    hiredis (already parsing the replies) packs the same bytes in C. Anything hiredis will
    not pack (None, a bool) goes to redis-py's packer, which raises its usual DataError."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if isinstance(name, str):
            if " " in name:  # "SCRIPT LOAD": Redis wants the words as separate arguments
                args = (*name.split(), *args[1:])
        elif isinstance(name, bytes) and b" " in name:
            args = (*name.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)


def redis_client(url: str, max_connections: int = 64, socket_timeout: float | None = 10) -> Redis:
    """Redis with bounded waits; RESP2 keeps replies simple for Lua scripts.

    The pool blocks (up to 10 s) for a free connection when all are busy: redis-py's default
    pool raises MaxConnectionsError instead, which turned a burst into failed requests.
    `socket_timeout=None` is for callers that bound a whole pipeline themselves: redis-py
    otherwise starts a timer for every reply read, a pipeline of a thousand included.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=10,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5,
        protocol=2,
        health_check_interval=30,
        connection_class=HiredisPackingConnection,  # a rediss:// or unix:// URL picks its own
    )
    return Redis.from_pool(pool)  # the client owns the pool and closes it


async def redis_ready(redis: Redis) -> bool:
    try:
        async with asyncio.timeout(2):
            return bool(await redis.ping())
    except Exception:
        return False


async def wait_for_redis(redis: Redis, within_s: float, *, every_s: float = 0.5) -> None:
    """Return once Redis answers, waiting while it is unreachable or still loading its
    dataset (a restarted Redis with a large append-only file takes a while, and answers
    every command with LOADING until then); raise TimeoutError after `within_s`."""
    deadline = time.monotonic() + within_s
    told = False
    while True:
        try:
            async with asyncio.timeout(max(every_s, 2)):
                await redis.ping()
            return
        except (RedisConnectionError, TimeoutError) as exc:  # BusyLoadingError is one
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Redis was not ready within {within_s:g}s: {exc}") from exc
            if not told:
                log.warning("waiting for Redis: %s", exc)
                told = True
        await asyncio.sleep(every_s)


async def cancel_and_wait(task: asyncio.Task[Any], *, every_s: float = 0.1) -> None:
    """Cancel `task` and wait until it has ended, cancelling again while it goes on.

    One cancellation is not always enough on Python 3.11: `asyncio.wait_for` returns the
    inner result and drops a cancellation that arrives in the same turn of the loop as that
    result (CPython gh-86296, fixed in 3.12). redis-py sends every command through
    `wait_for` when a socket timeout is set, so a loop cancelled during a Redis call could
    carry on and hold up shutdown for good. Waiting here never raises the task's own
    outcome; cancelling the caller still cancels the caller.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every_s)
    error = None if task.cancelled() else task.exception()
    if error is not None:
        log.warning("task %s failed while stopping", task.get_name(), exc_info=error)
