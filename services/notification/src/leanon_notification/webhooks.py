"""Signed CloudEvents webhooks over a pooled HTTP client, refusing private targets."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections import Counter
from urllib.parse import urlsplit

import aiohttp

from leanon_notification.retries import Outcome, classify_http, permanent, retryable
from leanon_notification.signing import HEADER, sign
from leanon_shared.models import is_internal, resolved_address

CONTENT_TYPE = "application/cloudevents+json"


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
            limit=0, limit_per_host=min(self._per_host, 200), ttl_dns_cache=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, skip_auto_headers=("User-Agent",)
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _private(self, host: str) -> bool:
        """Checked at delivery time, since DNS may have changed since the URL was accepted."""
        if host.lower() in self._allowed:
            return False
        try:
            addresses = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            addresses = [resolved_address(i[4][0]) for i in infos]
        return any(is_internal(a) for a in addresses)

    async def send(self, url: str, body: bytes) -> Outcome:
        assert self._session is not None, "WebhookSender.start() first"
        host = (urlsplit(url).hostname or "").lower()
        try:
            if await self._private(host):
                return permanent("target address is private")
        except OSError as exc:
            return retryable(f"dns: {type(exc).__name__}")
        if self._pending[host] >= self._per_host:
            return retryable("host busy")
        self._pending[host] += 1
        headers = {"Content-Type": CONTENT_TYPE, HEADER: sign(body, self._secret)}
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                return classify_http(response.status, response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return retryable(type(exc).__name__ or "connection error")
        finally:
            self._pending[host] -= 1
            if not self._pending[host]:
                del self._pending[host]
