"""The offer status record in Redis: the one atomic arbiter between answers and timeouts.

Matching writes the record before it announces an offer; intake moves it when a helper answers;
matching moves it on timeout, cancel or withdrawal. Whoever moves it first wins, atomically.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from leanon_shared.coalesce import CoalescedScript

# KEYS[1] = offer key; ARGV[1] = new status; ARGV[2..] = statuses it may move from.
# Returns {outcome, request_id, helper_id, region}: outcome is "ok" (moved), "same" (already
# there: a repeat), "missing", or the current status that blocks the move.
_TRANSITION = """
local f = redis.call('HMGET', KEYS[1], 'status', 'request_id', 'helper_id', 'region')
if not f[1] then return {'missing'} end
if f[1] == ARGV[1] then return {'same', f[2], f[3], f[4]} end
for i = 2, #ARGV do
  if f[1] == ARGV[i] then
    redis.call('HSET', KEYS[1], 'status', ARGV[1])
    return {'ok', f[2], f[3], f[4]}
  end
end
return {f[1], f[2], f[3], f[4]}
"""

# KEYS[1] = offer key; ARGV = status, request_id, helper_id, region, ttl seconds.
_CREATE = """
redis.call('HSETNX', KEYS[1], 'status', ARGV[1])
redis.call('HSET', KEYS[1], 'request_id', ARGV[2], 'helper_id', ARGV[3], 'region', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
"""

ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "accepted": ("offered",),
    "declined": ("offered",),
    "expired": ("offered",),
    "dropped": ("accepted",),
    "withdrawn": ("offered", "accepted"),
}
RECORD_TTL_S = 14 * 24 * 3600


@dataclass(frozen=True, slots=True)
class OfferRecord:
    org: str
    offer_id: str
    request_id: str
    helper_id: str
    region: str
    status: str


class OfferRecords:
    """Offer status records under one key prefix."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._create = redis.register_script(_CREATE)
        # the moves of concurrent callers (a batch's answers) share one pipeline
        self._transition = CoalescedScript(redis, _TRANSITION)

    def key(self, org: str, offer_id: str) -> str:
        return f"{self._prefix}offer:{org}:{offer_id}"

    async def create(self, record: OfferRecord) -> None:
        await self.create_many([record])

    async def create_many(self, records: Iterable[OfferRecord]) -> None:
        """Write records in one round trip, each atomically (one script call); a status
        already there (moved by an answer that came first) is kept."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for r in records:
                args: list[str | int] = [
                    r.status,
                    r.request_id,
                    r.helper_id,
                    r.region,
                    RECORD_TTL_S,
                ]
                await self._create(keys=[self.key(r.org, r.offer_id)], args=args, client=pipe)
            if pipe:
                await pipe.execute()

    async def get(self, org: str, offer_id: str) -> OfferRecord | None:
        raw: dict[Any, Any] = await self._redis.hgetall(self.key(org, offer_id))
        if not raw:
            return None
        text = {_s(k): _s(v) for k, v in raw.items()}
        return OfferRecord(
            org=org,
            offer_id=offer_id,
            request_id=text["request_id"],
            helper_id=text["helper_id"],
            region=text["region"],
            status=text["status"],
        )

    async def move(self, org: str, offer_id: str, to: str) -> str:
        """Move to `to` if allowed; returns 'ok', 'same', 'missing' or the blocking status."""
        return (await self.move_returning(org, offer_id, to))[0]

    async def move_returning(
        self, org: str, offer_id: str, to: str
    ) -> tuple[str, OfferRecord | None]:
        """`move`, and the record as it was found (None when missing), in one round trip."""
        result = [
            _s(v)
            for v in await self._transition(
                keys=[self.key(org, offer_id)], args=[to, *ALLOWED_FROM[to]]
            )
        ]
        if result[0] == "missing":
            return "missing", None
        outcome, request_id, helper_id, region = result
        found = to if outcome in ("ok", "same") else outcome
        return outcome, OfferRecord(org, offer_id, request_id, helper_id, region, found)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
