"""Contact details of helpers and requesters, kept only here (never on {prefix}events)."""

from __future__ import annotations

from typing import Literal

from redis.asyncio import Redis

from leanon_shared.models import Contact

Role = Literal["helper", "requester"]
REQUESTER_TTL_S = 45 * 24 * 3600


class ContactBook:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._p = prefix

    def _key(self, org: str, role: Role, ident: str) -> str:
        return f"{self._p}contact:{org}:{role}:{ident}"

    async def put(self, org: str, role: Role, ident: str, contact: Contact) -> None:
        ttl = REQUESTER_TTL_S if role == "requester" else None
        await self._r.set(self._key(org, role, ident), contact.model_dump_json(), ex=ttl)

    async def erase(self, org: str, role: Role, ident: str) -> None:
        await self._r.delete(self._key(org, role, ident))

    async def get(self, org: str, role: Role, ident: str) -> Contact | None:
        raw = await self._r.get(self._key(org, role, ident))
        return Contact.model_validate_json(raw) if raw else None
