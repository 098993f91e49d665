"""Webhook targets that must be refused: hosts that are, or resolve to, internal addresses.

Resolution runs on the event loop's resolver with a time bound and a small cache, so a slow
DNS server never stalls the API. A host that does not resolve now is accepted: notification
checks again at delivery time, because DNS can change.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from leanon_shared.models import Contact, host_is_private, is_internal, resolved_address

RESOLVE_TIMEOUT_S = 2.0
CACHE_TTL_S = 300.0
CACHE_MAX = 10_000
Resolver = Callable[[str], Awaitable[list[str]]]


async def resolve(host: str) -> list[str]:
    """The host's addresses from the loop's resolver (a thread: never blocks the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class WebhookHosts:
    def __init__(self, allowed_hosts: frozenset[str], resolver: Resolver = resolve) -> None:
        self.allowed_hosts = allowed_hosts
        self._resolve = resolver
        self._cache: dict[str, tuple[float, bool]] = {}

    async def refusal(self, contact: Contact | None) -> str | None:
        """Why this contact's webhook must be refused, or None when it may be used."""
        if contact is None or not contact.webhook_url:
            return None
        host = (urlsplit(contact.webhook_url).hostname or "").lower()
        if host in self.allowed_hosts:
            return None
        if host_is_private(host) or await self._resolves_internal(host):
            return f"webhook host {host!r} is loopback, link-local or private"
        return None

    async def _resolves_internal(self, host: str) -> bool:
        now = time.monotonic()
        cached = self._cache.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                addresses = await self._resolve(host)
            internal = any(is_internal(resolved_address(a)) for a in addresses)
        except (OSError, UnicodeError, TimeoutError):
            return False  # unresolvable now; not cached, delivery checks again
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[host] = (now + CACHE_TTL_S, internal)
        return internal
