"""Where matching keeps each request's state and due timers, in Redis."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from leanon_matching.domain.lifecycle import RequestState

STATE_TTL_S = 14 * 24 * 3600

# KEYS[1] timers zset; ARGV: now, lease_s, limit. Returns due members, leased for lease_s so
# that a crash between reading and publishing fires them again rather than losing them.
_LEASE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #due do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), due[i])
end
return due
"""


class RequestStore:
    """Request aggregates (and the request details matching needs again) per org and id."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._p = prefix

    def _key(self, org: str, request_id: str) -> str:
        return f"{self._p}req:{org}:{request_id}"

    async def load(self, org: str, request_id: str) -> tuple[RequestState, dict[str, Any]] | None:
        raw = await self._r.get(self._key(org, request_id))
        if raw is None:
            return None
        body = orjson.loads(raw)
        return RequestState.from_dict(body["state"]), body["request"]

    async def save(self, state: RequestState, request: dict[str, Any]) -> None:
        body = orjson.dumps({"state": state.to_dict(), "request": request})
        await self._r.set(self._key(state.org, state.request_id), body, ex=STATE_TTL_S)


class Timers:
    """Due times for offer timeouts and request expiry, shared by all matching instances."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._key = f"{prefix}timers"
        self._lease = redis.register_script(_LEASE_DUE)

    async def schedule(self, member: dict[str, str], due_epoch: float) -> None:
        await self._r.zadd(
            self._key, {orjson.dumps(member, option=orjson.OPT_SORT_KEYS): due_epoch}
        )

    async def lease_due(self, now_epoch: float, lease_s: float, limit: int) -> list[dict[str, str]]:
        raw = await self._lease(keys=[self._key], args=[now_epoch, lease_s, limit])
        return [orjson.loads(m) for m in raw]

    async def done(self, member: dict[str, str]) -> None:
        await self._r.zrem(self._key, orjson.dumps(member, option=orjson.OPT_SORT_KEYS))
