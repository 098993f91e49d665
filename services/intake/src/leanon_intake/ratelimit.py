"""Per-org rate limits shared by every intake instance: GCRA in one Redis call.

GCRA (the generic cell rate algorithm) keeps one timestamp per org, the theoretical arrival
time: a call is allowed when it would not push that time more than the burst ahead of now.
Redis's own clock decides, so instances with skewed clocks agree.

Under a large limit an instance takes a small block of calls at once (a twentieth of a
second's worth, at most a tenth of the burst) and spends it locally for up to a second, so a
busy org costs one Redis call per block instead of one per request. Small limits take one
call at a time and stay exact.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from redis.asyncio import Redis

# KEYS[1] = the org's TAT key; ARGV = emission interval (µs), burst tolerance (µs), calls.
# Returns 0 when all the calls are allowed, else the µs to wait before they would be.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local calls = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * calls
local wait = new_tat - tolerance - now
if wait > 0 then return wait end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return 0
"""


BLOCK_LIFETIME_S = 1.0


@dataclass(frozen=True, slots=True)
class Limit:
    per_second: float
    burst: int

    @property
    def block(self) -> int:
        """Calls an instance takes from Redis at once."""
        return max(1, min(self.burst // 10, int(self.per_second / 20)))


class RateLimiter:
    def __init__(
        self, redis: Redis, prefix: str, default: Limit, overrides: dict[str, Limit]
    ) -> None:
        self._key = f"{prefix}ratelimit:".__add__
        self._default = default
        self._overrides = overrides
        self._script = redis.register_script(_GCRA)
        self._blocks: dict[str, tuple[int, float]] = {}  # org -> (calls left, usable until)
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait_s(self, org: str) -> float:
        """0 when the org may make this call now; else how long until it may (seconds)."""
        if self._spend(org):
            return 0.0
        # One Redis call at a time per org: when a block runs out under load, the calls
        # waiting meanwhile spend the next block instead of each taking one of their own.
        async with self._locks.setdefault(org, asyncio.Lock()):
            if self._spend(org):
                return 0.0
            limit = self._overrides.get(org, self._default)
            for calls in dict.fromkeys((limit.block, 1)):  # a whole block, else a single call
                waited = await self._take(org, limit, calls)
                if not waited:
                    self._blocks[org] = (calls - 1, time.monotonic() + BLOCK_LIFETIME_S)
                    return 0.0
            return waited

    def _spend(self, org: str) -> bool:
        """Take one call from the org's local block, if it has one left and still usable."""
        left, until = self._blocks.get(org, (0, 0.0))
        if left > 0 and until > time.monotonic():
            self._blocks[org] = (left - 1, until)
            return True
        return False

    async def _take(self, org: str, limit: Limit, calls: int) -> float:
        interval_us = 1_000_000 / limit.per_second
        tolerance_us = interval_us * limit.burst
        waited = await self._script(keys=[self._key(org)], args=[interval_us, tolerance_us, calls])
        return int(waited) / 1_000_000
