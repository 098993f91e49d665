"""Signed CloudEvents webhooks over a pooled HTTP client, refusing private targets."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from leanon_notification.signing import HEADER, sign
from leanon_shared.models import is_internal, resolved_address

CONTENT_TYPE = "application/cloudevents+json"


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    permanent: bool
    status: int | None
    detail: str


class WebhookSender:
    def __init__(self, secret: bytes, allowed_hosts: frozenset[str], timeout_s: float) -> None:
        self._secret = secret
        self._allowed = allowed_hosts
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=500, limit_per_host=50, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)

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
        host = urlsplit(url).hostname or ""
        try:
            if await self._private(host):
                return Outcome(False, True, None, "target address is private")
        except OSError as exc:
            return Outcome(False, False, None, f"dns: {type(exc).__name__}")
        headers = {"Content-Type": CONTENT_TYPE, HEADER: sign(body, self._secret)}
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome(False, False, None, type(exc).__name__)
        if 200 <= status < 300:
            return Outcome(True, False, status, "ok")
        retryable = status >= 500 or status in (408, 429)
        return Outcome(False, not retryable, status, f"http {status}")
