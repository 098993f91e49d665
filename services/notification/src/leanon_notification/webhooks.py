"""Signed CloudEvents webhooks over a pooled HTTP client, refusing private targets."""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from leanon_notification.retries import Outcome, classify_http, permanent, retryable
from leanon_notification.signing import HEADER, sign
from leanon_shared.models import is_internal, resolved_address

CONTENT_TYPE = "application/cloudevents+json"
PRIVATE = "target address is private"


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


class WebhookSender:
    """POSTs signed bodies. Each request has its own timeout, and one host may hold at most
    `per_host` deliveries at once: past that it is told "busy" and retried later, so a dead
    endpoint can never take every slot."""

    def __init__(
        self,
        secret: bytes,
        allowed_hosts: frozenset[str],
        timeout_s: float,
        per_host: int = 500,
    ) -> None:
        self._secret = secret
        self._allowed = allowed_hosts
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._per_host = per_host
        self._pending: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=min(self._per_host, 200),
            ttl_dns_cache=60,
            resolver=GuardedResolver(self._allowed),
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, skip_auto_headers=("User-Agent",)
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _private_literal(self, host: str) -> bool:
        """An IP address in the URL itself (names are checked as they resolve)."""
        if host in self._allowed:
            return False
        try:
            return is_internal(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            return False

    async def send(self, url: str, body: bytes) -> Outcome:
        assert self._session is not None, "WebhookSender.start() first"
        host = (urlsplit(url).hostname or "").lower()
        if self._private_literal(host):
            return permanent(PRIVATE)
        if self._pending[host] >= self._per_host:
            return retryable("host busy")
        self._pending[host] += 1
        headers = {"Content-Type": CONTENT_TYPE, HEADER: sign(body, self._secret)}
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                return classify_http(response.status, response.headers.get("Retry-After"))
        except aiohttp.InvalidURL:  # e.g. 2130706433 for 127.0.0.1: never worth another try
            return permanent("invalid url")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, PrivateTarget):
                return permanent(PRIVATE)
            return retryable(type(exc).__name__)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return retryable(type(exc).__name__ or "connection error")
        finally:
            self._pending[host] -= 1
            if not self._pending[host]:
                del self._pending[host]
