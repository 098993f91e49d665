"""Helper capacity in Redis: atomic reservations so no helper is ever double-booked.

Each helper has a hash offer_id -> "start,end" (epoch seconds) of the offers and assignments
it holds. Reserving counts the entries whose window overlaps the new one and adds the new entry
only while that count is below capacity, all inside one Lua call: two matching instances, or a
zombie after a rebalance, cannot both win the last slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from redis.asyncio import Redis

from leanon_matching.index import LoadQuery

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

# ARGV: start, end, the load-hash prefix, the recent-offer hashes joined by ",", the helper
# ids joined by "," (one argument each: cheaper to send than a hundred). Returns, per helper,
# how many held windows overlap and how many offers it got in those days: the two numbers
# the fairness score needs, in one round trip.
_LOADS = """
local start, stop, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local days = {}
for day in string.gmatch(ARGV[4], '[^,]+') do days[#days + 1] = day end
local ids = {}
for id in string.gmatch(ARGV[5], '[^,]+') do ids[#ids + 1] = id end
local recent = {}
for k = 1, #ids do recent[k] = 0 end
for d = 1, #days do
  local counts = redis.call('HMGET', days[d], unpack(ids))
  for k = 1, #ids do recent[k] = recent[k] + (tonumber(counts[k]) or 0) end
end
local out = {}
for k = 1, #ids do
  local vals, n = redis.call('HVALS', prefix .. ids[k]), 0
  for i = 1, #vals do
    local s, e = string.match(vals[i], '([^,]+),([^,]+)')
    if tonumber(s) < stop and start < tonumber(e) then n = n + 1 end
  end
  out[#out + 1] = n
  out[#out + 1] = recent[k]
end
return out
"""


RECENT_DAYS = 7


@dataclass(frozen=True, slots=True)
class Hold:
    """A slot to reserve for an offer: the helper's window from start to end."""

    org: str
    helper_id: str
    offer_id: str
    start: datetime
    end: datetime
    capacity: int


RECENT_TTL_S = (RECENT_DAYS + 1) * 24 * 3600


class Reservations:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._p = prefix
        self._reserve = redis.register_script(_RESERVE)
        self._loads = redis.register_script(_LOADS)
        self._load_queries: dict[str, tuple[date, LoadQuery]] = {}

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

    async def reserve_many(self, holds: Sequence[Hold], now: datetime) -> list[bool]:
        """`reserve` for many offers in one pipelined round trip; each stays atomic on its own,
        so two holds on one helper are decided in order."""
        if not holds:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for h in holds:
                args: list[str | int] = [
                    h.offer_id,
                    int(h.start.timestamp()),
                    int(h.end.timestamp()),
                    h.capacity,
                    int(now.timestamp()),
                ]
                await self._reserve(keys=[self.key(h.org, h.helper_id)], args=args, client=pipe)
            return [bool(r) for r in await pipe.execute()]

    async def release(self, org: str, helper_id: str, offer_id: str) -> None:
        await self._r.hdel(self.key(org, helper_id), offer_id)

    def _recent_key(self, org: str, day: date) -> str:
        return f"{self._p}offers:{org}:{day:%Y%m%d}"

    async def count_offer(self, org: str, helper_id: str, now: datetime) -> None:
        await self.count_offers([(org, helper_id)], now)

    async def count_offers(self, offers: Iterable[tuple[str, str]], now: datetime) -> None:
        """One more offer today for each (org, helper): the fairness score looks back a week."""
        keys = set()
        async with self._r.pipeline(transaction=False) as pipe:
            for org, helper_id in offers:
                key = self._recent_key(org, now)
                pipe.hincrby(key, helper_id, 1)
                keys.add(key)
            for key in keys:
                pipe.expire(key, RECENT_TTL_S)
            if pipe:
                await pipe.execute()

    def load_query(self, org: str, now: datetime) -> LoadQuery:
        """What the candidate search needs to return loads with the helpers it finds."""
        today = now.date()
        cached = self._load_queries.get(org)
        if cached is None or cached[0] != today:  # formatting seven keys cost more than a GET
            days = tuple(
                self._recent_key(org, today - timedelta(days=d)) for d in range(RECENT_DAYS)
            )
            cached = self._load_queries[org] = (today, LoadQuery(self.key(org, ""), days))
        return cached[1]

    async def loads(
        self, org: str, helper_ids: Sequence[str], start: datetime, end: datetime, now: datetime
    ) -> list[tuple[int, int]]:
        """Per helper: (assignments and open offers overlapping the window, offers received
        over the last RECENT_DAYS days)."""
        if not helper_ids:
            return []
        days = [self._recent_key(org, now - timedelta(days=d)) for d in range(RECENT_DAYS)]
        args: list[str | int] = [
            int(start.timestamp()),
            int(end.timestamp()),
            self.key(org, ""),
            ",".join(days),
            ",".join(helper_ids),
        ]
        flat = await self._loads(keys=[], args=args)
        return [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]
