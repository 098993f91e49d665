"""Keep-alive HTTP/1.1 connections for posting webhooks: one pool per origin, one write per post,
httptools to read the answer.

Why not aiohttp's client: it cost ~400 µs of CPU per post here (URL objects, header multidicts,
payload writers, timers, a response object), more than everything else a delivery does together.
A webhook post needs far less: write one buffer, read a status line and one header, keep the
connection for the next post. This module does that and nothing more; it never follows a
redirect and never retries a post by itself (the retry topics do that).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools
from aiohttp.abc import AbstractResolver

from leanon_shared.runtime import cancel_and_wait

IDLE_S = 4.0  # below the shortest keep-alive servers commonly use (Node: 5 s), so a reused
# connection is rarely one the server is closing at that moment
DNS_TTL_S = 60.0
SWEEP_S = 0.05


class Disconnected(ConnectionError):
    """The connection closed before a whole status line and headers came back."""


class BadAnswer(ConnectionError):
    """What came back was not HTTP."""


@dataclass(slots=True)  # not frozen: one per post (see dispatcher.Attempt)
class Answer:
    status: int
    retry_after: str | None


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a post goes: scheme, host (as written, lower case) and port; `authority` is the
    Host header."""

    tls: bool
    host: str
    port: int

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One connection; at most one post on it at a time. After each post it goes back to its
    pool exactly once (`on_done`): when the answer has been read whole, or when it failed."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.deadline = 0.0  # loop time by which the post in flight must have its answer
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Answer] | None = None
        self._retry_after: str | None = None
        self._complete = True  # no answer half read
        self._on_done: Callable[[_Connection], None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:  # an upgrade too: nothing we asked for
            self._fail(BadAnswer(type(exc).__name__))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(Disconnected(type(exc).__name__ if exc else "closed by the server"))

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._complete = False
        self._retry_after = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 11 and name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue and the like: the answer is still to come
            return
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_result(Answer(status, self._retry_after))

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            return
        self._complete = True
        if not self._parser.should_keep_alive():
            self._shut()
        self._finish()

    # -- for the pool --------------------------------------------------------------------------
    def post(self, data: bytes, on_done: Callable[[_Connection], None]) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._answer = answer = asyncio.get_running_loop().create_future()
        self._on_done = on_done
        self.transport.write(data)
        return answer

    @property
    def reusable(self) -> bool:
        return not self.closed and self._complete

    def abort(self) -> None:
        """Give up on this post: close, and hand the connection back (once)."""
        self._answer = None
        self._shut()
        self._finish()

    def _shut(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self) -> None:
        done, self._on_done = self._on_done, None
        if done is not None:
            done(self)

    def expire(self) -> None:
        self._fail(TimeoutError())

    def _fail(self, exc: Exception) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc)
        self._shut()
        self._finish()


class _Pool:
    """The connections to one origin: idle ones reused newest first, at most `limit` open."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.idle: collections.deque[_Connection] = collections.deque()
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_idle(self, now: float) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if conn.reusable and now - conn.idle_since < IDLE_S:
                return conn
            conn.abort()
            self.gone()
        return None

    def give_back(self, conn: _Connection) -> None:
        if conn.reusable:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
            self.wake()
        else:
            self.gone()

    def gone(self) -> None:
        self.open -= 1
        self.wake()

    def wake(self) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class Connections:
    """Posts over keep-alive connections, at most `per_origin` open to one origin. Names resolve
    through `resolver` (cached for a minute) and the connection goes to exactly the addresses it
    returned, so a resolver that refuses private addresses cannot be raced by DNS rebinding."""

    def __init__(self, resolver: AbstractResolver, per_origin: int) -> None:
        self._resolver = resolver
        self._per_origin = per_origin
        self._pools: dict[Origin, _Pool] = {}
        # Posts awaiting an answer, checked against their deadlines every SWEEP_S: a timer per
        # post (asyncio.timeout) cost more than the post's own write and read.
        self._answering: set[_Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, origin: Origin, head: bytes, body: bytes, timeout_s: float) -> Answer:
        """POST `head` (request line and headers, ending in a blank line) and `body`; returns
        the status and Retry-After as soon as the headers are in. Raises TimeoutError when
        that takes longer than `timeout_s` in all (waiting for a connection included, give or
        take SWEEP_S), OSError when the connection fails."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(self._per_origin)
        conn = pool.take_idle(time.monotonic())
        if conn is None:  # connecting or queueing: rarer, and bounded the ordinary way
            async with asyncio.timeout_at(deadline):
                conn = await self._acquire(pool, origin)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep(), name="webhook-timeouts")
        conn.deadline = deadline
        self._answering.add(conn)
        try:
            return await conn.post(head + body, pool.give_back)
        except BaseException:
            conn.abort()  # cancelled, say: its answer may yet come, so never reuse it
            raise
        finally:
            self._answering.discard(conn)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_S)
            now = loop.time()
            for conn in [c for c in self._answering if c.deadline <= now]:
                conn.expire()

    async def close(self) -> None:
        if self._sweeper is not None:
            await cancel_and_wait(self._sweeper)
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.abort()
        self._pools.clear()
        await self._resolver.close()

    async def _acquire(self, pool: _Pool, origin: Origin) -> _Connection:
        while True:
            conn = pool.take_idle(time.monotonic())
            if conn is not None:
                return conn
            if pool.open < pool.limit:
                pool.open += 1
                try:
                    return await self._connect(origin)
                except BaseException:
                    pool.gone()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            pool.waiting.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    pool.wake()  # it was woken for a slot it will not use: pass it on
                raise

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if origin.tls else None
        last: Exception = OSError(f"no address for {origin.host}")
        for address in await self._addresses(origin):
            try:
                _, conn = await loop.create_connection(
                    _Connection,
                    address,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
            except OSError as exc:
                last = exc
                continue
            return conn
        raise last

    async def _addresses(self, origin: Origin) -> list[str]:
        if _is_ip(origin.host):
            return [origin.host]
        key = (origin.host, origin.port)
        cached = self._dns.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < DNS_TTL_S:
            return cached[1]
        results = await self._resolver.resolve(origin.host, origin.port, socket.AF_UNSPEC)
        addresses = [str(r["host"]) for r in results]
        self._dns[key] = (now, addresses)
        return addresses

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True
