"""The offer status record in Redis: the one atomic arbiter between answers and timeouts.

Matching writes the record before it announces an offer; intake moves it when a helper answers;
matching moves it on timeout, cancel or withdrawal. Whoever moves it first wins, atomically.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from leanon_shared.coalesce import GroupCommit

# KEYS = offer keys; ARGV = for each, the new status and the statuses it may move from,
# comma-separated. For each offer, in order, {outcome, request_id, helper_id, region}: outcome
# is "ok" (moved), "same" (already there: a repeat), "missing" (fields empty), or the current
# status that blocks the move. One offer moved twice in a call sees its first move.
_TRANSITION_MANY = """
local out = {}
for i = 1, #KEYS do
  local to = ARGV[2 * i - 1]
  local f = redis.call('HMGET', KEYS[i], 'status', 'request_id', 'helper_id', 'region')
  local outcome = f[1]
  if not outcome then
    outcome = 'missing'
  elseif outcome == to then
    outcome = 'same'
  else
    for from in string.gmatch(ARGV[2 * i], '[^,]+') do
      if f[1] == from then
        redis.call('HSET', KEYS[i], 'status', to)
        outcome = 'ok'
        break
      end
    end
  end
  local n = #out
  out[n + 1] = outcome
  out[n + 2] = f[2] or ''
  out[n + 3] = f[3] or ''
  out[n + 4] = f[4] or ''
end
return out
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
        self._moves = _Moves(redis)

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
        """`move`, and the record as it was found (None when missing), in one round trip;
        the moves of concurrent callers share one script call."""
        outcome, request_id, helper_id, region = await self._moves(self.key(org, offer_id), to)
        if outcome == "missing":
            return "missing", None
        found = to if outcome in ("ok", "same") else outcome
        return outcome, OfferRecord(org, offer_id, request_id, helper_id, region, found)


class _Moves(GroupCommit):
    """Offer moves asked in one loop turn (or while the previous flush was out) go as one
    call of _TRANSITION_MANY, in the order they were asked."""

    def __init__(self, redis: Redis, max_batch: int = 1000) -> None:
        super().__init__()
        self._r = redis
        self._sha = hashlib.sha1(_TRANSITION_MANY.encode()).hexdigest()
        self._max = max_batch
        self._pending: list[tuple[str, str, asyncio.Future[list[str]]]] = []

    async def __call__(self, key: str, to: str) -> list[str]:
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._pending.append((key, to, future))
        self._queued()
        return await future

    def _take(self) -> Coroutine[Any, Any, None] | None:
        if not self._pending:
            return None
        batch, self._pending = self._pending[: self._max], self._pending[self._max :]
        return self._execute(batch)

    async def _execute(self, batch: list[tuple[str, str, asyncio.Future[list[str]]]]) -> None:
        keys = [key for key, _, _ in batch]
        args = [a for _, to, _ in batch for a in (to, ",".join(ALLOWED_FROM[to]))]
        try:
            try:
                flat = await self._r.evalsha(self._sha, len(keys), *keys, *args)
            except NoScriptError:  # Redis lost its scripts (a restart): nothing ran
                await self._r.script_load(_TRANSITION_MANY)
                flat = await self._r.evalsha(self._sha, len(keys), *keys, *args)
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for n, (*_, future) in enumerate(batch):
            if not future.done():
                future.set_result([_s(v) for v in flat[4 * n : 4 * n + 4]])


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
