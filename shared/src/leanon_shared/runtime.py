"""Serving a service: uvicorn on loopback with uvloop, graceful on SIGTERM."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import uvicorn
from redis.asyncio import BlockingConnectionPool, Redis
from starlette.types import ASGIApp


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
    )
    return Redis.from_pool(pool)  # the client owns the pool and closes it


async def redis_ready(redis: Redis) -> bool:
    try:
        return bool(await asyncio.wait_for(redis.ping(), timeout=2))
    except Exception:
        return False
