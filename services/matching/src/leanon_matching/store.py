"""Where matching keeps each request's state and due timers, in Redis."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import orjson
from redis.asyncio import Redis

from leanon_matching.domain.lifecycle import RequestState

STATE_TTL_S = 14 * 24 * 3600
Loaded = tuple[RequestState, dict[str, Any]]

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

    async def load(self, org: str, request_id: str) -> Loaded | None:
        return (await self.load_many([(org, request_id)]))[(org, request_id)]

    async def load_many(
        self, keys: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], Loaded | None]:
        """Many requests in one round trip (MGET); None for those never saved."""
        keys = list(keys)
        if not keys:
            return {}
        raws = await self._r.mget([self._key(org, request_id) for org, request_id in keys])
        return {key: _decode(raw) for key, raw in zip(keys, raws, strict=True)}

    async def save(self, state: RequestState, request: dict[str, Any]) -> None:
        await self.save_many([(state, request)])

    async def save_many(self, items: Iterable[tuple[RequestState, dict[str, Any]]]) -> None:
        """Many requests in one pipelined round trip."""
        async with self._r.pipeline(transaction=False) as pipe:
            for state, request in items:
                body = orjson.dumps({"state": state.to_dict(), "request": request})
                pipe.set(self._key(state.org, state.request_id), body, ex=STATE_TTL_S)
            if pipe:
                await pipe.execute()


def _decode(raw: bytes | str | None) -> Loaded | None:
    if raw is None:
        return None
    body = orjson.loads(raw)
    return RequestState.from_dict(body["state"]), body["request"]


class Timers:
    """Due times for offer timeouts and request expiry, shared by all matching instances."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._key = f"{prefix}timers"
        self._lease = redis.register_script(_LEASE_DUE)

    async def schedule(self, member: dict[str, str], due_epoch: float) -> None:
        await self.schedule_many([(member, due_epoch)])

    async def schedule_many(self, timers: Iterable[tuple[dict[str, str], float]]) -> None:
        """Many timers in one ZADD."""
        mapping = {orjson.dumps(m, option=orjson.OPT_SORT_KEYS): due for m, due in timers}
        if mapping:
            await self._r.zadd(self._key, mapping)

    async def lease_due(self, now_epoch: float, lease_s: float, limit: int) -> list[dict[str, str]]:
        raw = await self._lease(keys=[self._key], args=[now_epoch, lease_s, limit])
        return [orjson.loads(m) for m in raw]

    async def done(self, members: Iterable[dict[str, str]]) -> None:
        encoded = [orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in members]
        if encoded:
            await self._r.zrem(self._key, *encoded)
