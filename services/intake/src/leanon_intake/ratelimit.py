"""Per-org rate limits shared by every intake instance: GCRA in one Redis call.

GCRA (the generic cell rate algorithm) keeps one timestamp per org, the theoretical arrival
time: a call is allowed when it would not push that time more than the burst ahead of now.
Redis's own clock decides, so instances with skewed clocks agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

# KEYS[1] = the org's TAT key; ARGV = emission interval (µs), burst tolerance (µs).
# Returns 0 when allowed, else the µs to wait before a call would be.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat + interval - tolerance - now
if wait > 0 then return wait end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return 0
"""


@dataclass(frozen=True, slots=True)
class Limit:
    per_second: float
    burst: int


class RateLimiter:
    def __init__(
        self, redis: Redis, prefix: str, default: Limit, overrides: dict[str, Limit]
    ) -> None:
        self._key = f"{prefix}ratelimit:".__add__
        self._default = default
        self._overrides = overrides
        self._script = redis.register_script(_GCRA)

    async def wait_s(self, org: str) -> float:
        """0 when the org may make this call now; else how long until it may (seconds)."""
        limit = self._overrides.get(org, self._default)
        interval_us = 1_000_000 / limit.per_second
        tolerance_us = interval_us * limit.burst
        waited = await self._script(keys=[self._key(org)], args=[interval_us, tolerance_us])
        return int(waited) / 1_000_000
