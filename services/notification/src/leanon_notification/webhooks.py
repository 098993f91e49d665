"""Signed CloudEvents webhooks over pooled keep-alive connections, refusing private targets."""

from __future__ import annotations

import asyncio
import base64
import collections
import functools
import ipaddress
import socket
from collections import Counter
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from leanon_notification.connections import Connections, Origin
from leanon_notification.retries import Outcome, classify_http, deferred, permanent, retryable
from leanon_notification.signing import HEADER, sign
from leanon_shared.models import is_internal, resolved_address

CONTENT_TYPE = "application/cloudevents+json"
SIGNATURE_HEADER = HEADER.encode()
PRIVATE = "target address is private"
BUSY_WAIT_S = 0.5
BUSY = "host busy"
GAP_WEIGHT = 0.05  # each answer's weight in its host's mean time between answers
PACED_HOSTS = 10_000  # hosts whose pace is remembered (forgotten all at once past that)


class PrivateTarget(OSError):
    """The host resolves to an address no webhook may reach."""


class GuardedResolver(AbstractResolver):
    """Resolves as usual, then refuses a host with any loopback, private or link-local address
    (unless allowed). The client connects to exactly the addresses checked here, so DNS cannot
    change between the check and the connection (no rebinding to an internal address)."""

    def __init__(self, allowed: frozenset[str], inner: AbstractResolver | None = None) -> None:
        self._allowed = allowed
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host.lower() not in self._allowed and any(
            is_internal(resolved_address(r["host"])) for r in results
        ):
            raise PrivateTarget(f"{host} resolves to a private address")
        return results

    async def close(self) -> None:
        await self._inner.close()


class InvalidUrl(ValueError):
    """A webhook URL no post can be made to."""


@dataclass(frozen=True, slots=True)
class Target:
    """A webhook URL taken apart once: where to connect and the request's fixed lines."""

    origin: Origin
    head: bytes  # request line, Host, Content-Type, Authorization: all but the per-post lines


@functools.lru_cache(maxsize=8192)
def target_of(url: str) -> Target:
    """Raises InvalidUrl for what is not http(s)://host[:port]/..., and for an all-numeric last
    label (2130706433 is 127.0.0.1 to some resolvers; no real name ends in a number)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            raise InvalidUrl(url)
        if not _is_ip_literal(host):
            last = host.rstrip(".").rsplit(".", 1)[-1]
            if last.isdigit() or last.startswith("0x"):
                raise InvalidUrl(url)
            host = host.encode("idna").decode("ascii")
        path = quote(parts.path or "/", safe=PATH_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=PATH_SAFE + "?")
    except (ValueError, UnicodeError) as exc:
        raise InvalidUrl(url) from exc
    tls = parts.scheme == "https"
    origin = Origin(tls, host, port or (443 if tls else 80))
    lines = [f"POST {path} HTTP/1.1", f"Host: {origin.authority}", f"Content-Type: {CONTENT_TYPE}"]
    if parts.username is not None:
        user = unquote(parts.username) + ":" + unquote(parts.password or "")
        lines.append("Authorization: Basic " + base64.b64encode(user.encode()).decode())
    return Target(origin, ("\r\n".join(lines) + "\r\n").encode())


PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class WebhookSender:
    """POSTs signed bodies. Each request has its own timeout, and one host may hold at most
    `per_host` deliveries at once, so a dead endpoint can never take every slot. Past that a
    delivery may queue for a moment (BUSY_WAIT_S, at most `per_host // 2` of them) while the
    host is answering, as a busy but healthy receiver does; otherwise it is told "busy" and
    retried later: soon and without spending an attempt when the host answers and only its
    queue is full, as a failed attempt when it has stopped answering. So a host that stops
    answering holds `per_host` slots until their timeouts, and half as many more for
    BUSY_WAIT_S at most."""

    def __init__(
        self,
        secret: bytes,
        allowed_hosts: frozenset[str],
        timeout_s: float,
        per_host: int = 500,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._secret = secret
        self._allowed = allowed_hosts
        self._timeout_s = timeout_s
        self._per_host = per_host
        self._pending: Counter[str] = Counter()
        self._queued: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._answered: dict[str, float] = {}  # host: loop time of its latest answer
        # host: loop time of its latest answer, and the mean time between its answers while
        # busy; kept when it goes idle, so that its next burst starts from its known pace
        self._pace: dict[str, tuple[float, float | None]] = {}
        self._resolver = resolver
        self._connections: Connections | None = None

    async def start(self) -> None:
        resolver = GuardedResolver(self._allowed, self._resolver)
        self._connections = Connections(resolver, per_origin=min(self._per_host, 200))

    async def stop(self) -> None:
        if self._connections is not None:
            await self._connections.close()

    def _private_literal(self, host: str) -> bool:
        """An IP address in the URL itself (names are checked as they resolve)."""
        if host in self._allowed:
            return False
        try:
            return is_internal(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            return False

    async def send(self, url: str, body: bytes) -> Outcome:
        assert self._connections is not None, "WebhookSender.start() first"
        try:
            target = target_of(url)
        except InvalidUrl:
            return permanent("invalid url")
        host = target.origin.host
        if self._private_literal(host):
            return permanent(PRIVATE)
        if self._pending[host] < self._per_host:
            self._pending[host] += 1
        elif (turned_away := await self._queue_for(host)) is not None:
            return turned_away
        head = b"%s%s: %s\r\nContent-Length: %d\r\n\r\n" % (
            target.head,
            SIGNATURE_HEADER,
            sign(body, self._secret).encode(),
            len(body),
        )
        try:
            answer = await self._connections.post(target.origin, head, body, self._timeout_s)
            self._note_answer(host)
            return classify_http(answer.status, answer.retry_after)
        except PrivateTarget:
            return permanent(PRIVATE)
        except (OSError, TimeoutError) as exc:  # refused, reset, no such name, too slow
            return retryable(type(exc).__name__)
        finally:
            self._release(host)

    async def _queue_for(self, host: str) -> Outcome | None:
        """Wait for a slot at a busy host, if it is answering; None once the slot is ours,
        else why not: a host that answers but has its queue full too is `deferred` (nothing
        is wrong with it), one that is stalled or too slow to free a slot costs an attempt."""
        loop = asyncio.get_running_loop()
        queue = self._queued.setdefault(host, collections.deque())
        # A host first busy now gets the same grace as one that answered just now; one that
        # has not answered for BUSY_WAIT_S is taken to be stalled.
        now = loop.time()
        answering = now - self._answered.setdefault(host, now) < BUSY_WAIT_S
        if not answering:
            return retryable(BUSY)
        if len(queue) >= self._per_host // 2:
            return deferred(BUSY, after=self._room_in(host, len(queue)))
        turn: asyncio.Future[None] = loop.create_future()
        queue.append(turn)
        try:
            async with asyncio.timeout(BUSY_WAIT_S):
                await turn
        except TimeoutError:
            # Handed a slot just as time ran out: it is ours all the same (and must be used
            # or given back), else we leave the queue.
            if not (turn.done() and not turn.cancelled()):
                return retryable(BUSY)
        except BaseException:  # cancelled (a shutdown): a slot handed to us goes on
            if turn.done() and not turn.cancelled():
                self._release(host)
            raise
        return None

    def _note_answer(self, host: str) -> None:
        now = asyncio.get_running_loop().time()
        self._answered[host] = now
        gap = None
        if (pace := self._pace.get(host)) is not None:
            last, gap = pace
            if now - last < BUSY_WAIT_S:  # a longer pause is idleness, not pace
                gap = now - last if gap is None else gap + (now - last - gap) * GAP_WEIGHT
        if len(self._pace) >= PACED_HOSTS and host not in self._pace:
            self._pace.clear()
        self._pace[host] = (now, gap)

    def _room_in(self, host: str, queued: int) -> float:
        """About how long the host will take to answer what it holds and what waits for it,
        from its time between answers while busy (BUSY_WAIT_S until that is known)."""
        gap = self._pace.get(host, (0.0, None))[1]
        if gap is None:
            return BUSY_WAIT_S
        return (self._pending[host] + queued) * gap

    def _release(self, host: str) -> None:
        """A post ended: its slot goes to the next delivery queued for the host, if any."""
        queue = self._queued.get(host)
        while queue:
            turn = queue.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._pending[host] -= 1
        if not self._pending[host]:
            del self._pending[host]
            self._queued.pop(host, None)
            self._answered.pop(host, None)
