"""Contact details of helpers and requesters, kept only here (never on {prefix}events)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
from redis.asyncio import Redis

from leanon_shared.models import Contact

Role = Literal["helper", "requester"]
REQUESTER_TTL_S = 45 * 24 * 3600
# Stored for a known recipient with no contact (a request without one, an erased helper), so
# "nobody to tell" is told apart from "not heard of yet".
NO_CONTACT = b"-"


class Unknown:
    """The recipient has not reached this service's contact book yet."""


UNKNOWN = Unknown()


@dataclass(frozen=True, slots=True)
class Reach:
    """How to reach someone, and the time zone their quiet hours are in."""

    contact: Contact
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class ContactChange:
    """New details for one recipient; no contact erases them."""

    org: str
    role: Role
    ident: str
    contact: Contact | None
    timezone: str = "UTC"


class ContactBook:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._p = prefix

    def key(self, org: str, role: Role, ident: str) -> str:
        return f"{self._p}contact:{org}:{role}:{ident}"

    async def put(
        self, org: str, role: Role, ident: str, contact: Contact, timezone: str = "UTC"
    ) -> None:
        await self.write([ContactChange(org, role, ident, contact, timezone)])

    async def erase(self, org: str, role: Role, ident: str) -> None:
        """Forget the details, remembering only that there is nobody to tell."""
        await self.write([ContactChange(org, role, ident, None)])

    async def write(self, changes: Sequence[ContactChange]) -> None:
        """Apply changes in order (the last for a recipient wins), in one round trip: a
        consumer batch of contacts is one pipeline, not a command each."""
        if not changes:
            return
        async with self._r.pipeline(transaction=False) as pipe:
            for change in changes:
                key = self.key(change.org, change.role, change.ident)
                if change.contact is None:
                    pipe.set(key, NO_CONTACT, ex=REQUESTER_TTL_S)
                    continue
                stored = {"contact": change.contact.model_dump(exclude_none=True)}
                value = orjson.dumps(stored | {"tz": change.timezone})
                pipe.set(key, value, ex=REQUESTER_TTL_S if change.role == "requester" else None)
            await pipe.execute()

    async def get(self, org: str, role: Role, ident: str) -> Reach | Unknown | None:
        return self.parse(await self._r.get(self.key(org, role, ident)))

    @staticmethod
    def parse(raw: bytes | str | None) -> Reach | Unknown | None:
        """What `get` returns, from the stored bytes (for reads batched elsewhere)."""
        if raw is None:
            return UNKNOWN
        if raw in (NO_CONTACT, NO_CONTACT.decode()):
            return None
        return _reach(raw)


@functools.lru_cache(maxsize=16384)
def _reach(raw: bytes | str) -> Reach:
    """Parsed once per stored value: validating a Contact costs more than the rest of a
    delivery's bookkeeping, and many events go to the same people. (Reach is frozen and
    nobody changes a Contact after parsing.)"""
    stored = orjson.loads(raw)
    if "contact" not in stored:  # written before time zones were kept
        return Reach(Contact.model_validate(stored))
    return Reach(Contact.model_validate(stored["contact"]), stored.get("tz") or "UTC")
