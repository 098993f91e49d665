"""Helper capacity in Redis: atomic reservations so no helper is ever double-booked.

Each helper has a hash offer_id -> "start,end" (epoch seconds) of the offers and assignments
it holds. Reserving counts the entries whose window overlaps the new one and adds the new entry
only while that count is below capacity, all inside one Lua call: two matching instances, or a
zombie after a rebalance, cannot both win the last slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from redis.asyncio import Redis

# KEYS[1] helper hash; ARGV: offer_id, start, end, capacity, now.  Returns 1 reserved, 0 full.
_RESERVE = """
local now = tonumber(ARGV[5])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 1 end
local entries = redis.call('HGETALL', KEYS[1])
local start, stop, overlapping = tonumber(ARGV[2]), tonumber(ARGV[3]), 0
for i = 1, #entries, 2 do
  local s, e = string.match(entries[i + 1], '([^,]+),([^,]+)')
  s, e = tonumber(s), tonumber(e)
  if e <= now then
    redis.call('HDEL', KEYS[1], entries[i])
  elseif s < stop and start < e then
    overlapping = overlapping + 1
  end
end
if overlapping >= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ',' .. ARGV[3])
return 1
"""

# KEYS: helper hashes; ARGV: start, end.  Returns how many held windows overlap, per helper.
_LOADS = """
local start, stop, out = tonumber(ARGV[1]), tonumber(ARGV[2]), {}
for k = 1, #KEYS do
  local vals, n = redis.call('HVALS', KEYS[k]), 0
  for i = 1, #vals do
    local s, e = string.match(vals[i], '([^,]+),([^,]+)')
    if tonumber(s) < stop and start < tonumber(e) then n = n + 1 end
  end
  out[k] = n
end
return out
"""


RECENT_DAYS = 7
RECENT_TTL_S = (RECENT_DAYS + 1) * 24 * 3600


class Reservations:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._p = prefix
        self._reserve = redis.register_script(_RESERVE)
        self._loads = redis.register_script(_LOADS)

    def key(self, org: str, helper_id: str) -> str:
        return f"{self._p}load:{org}:{helper_id}"

    async def reserve(
        self,
        org: str,
        helper_id: str,
        offer_id: str,
        start: datetime,
        end: datetime,
        capacity: int,
        now: datetime,
    ) -> bool:
        """Hold a slot for the offer; idempotent for the same offer id."""
        args: list[str | int] = [
            offer_id,
            int(start.timestamp()),
            int(end.timestamp()),
            capacity,
            int(now.timestamp()),
        ]
        return bool(await self._reserve(keys=[self.key(org, helper_id)], args=args))

    async def release(self, org: str, helper_id: str, offer_id: str) -> None:
        await self._r.hdel(self.key(org, helper_id), offer_id)

    def _recent_key(self, org: str, day: datetime) -> str:
        return f"{self._p}offers:{org}:{day:%Y%m%d}"

    async def count_offer(self, org: str, helper_id: str, now: datetime) -> None:
        """One more offer today for the helper: the fairness score looks back a week."""
        key = self._recent_key(org, now)
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, helper_id, 1)
            pipe.expire(key, RECENT_TTL_S)
            await pipe.execute()

    async def recent(self, org: str, helper_ids: Sequence[str], now: datetime) -> list[int]:
        """Offers each helper received over the last RECENT_DAYS days (today included)."""
        if not helper_ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for days in range(RECENT_DAYS):
                pipe.hmget(self._recent_key(org, now - timedelta(days=days)), list(helper_ids))
            per_day = await pipe.execute()
        return [sum(int(day[i] or 0) for day in per_day) for i in range(len(helper_ids))]

    async def loads(
        self, org: str, helper_ids: Sequence[str], start: datetime, end: datetime
    ) -> list[int]:
        if not helper_ids:
            return []
        keys = [self.key(org, h) for h in helper_ids]
        result = await self._loads(keys=keys, args=[int(start.timestamp()), int(end.timestamp())])
        return [int(n) for n in result]
