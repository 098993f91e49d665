"""The helper index in Redis: bounded candidate generation by (org, radius tier, H3 cell, skill).

A helper is filed in its home cell at the resolution of its radius tier, in one sorted set per
skill scored by skill level, with a packed profile beside it. A request looks in its own cell
and the two rings around it at every tier, which covers every helper whose radius reaches it,
and takes from each cell at most a fixed number of helpers at or above the required level
(from a random offset, so work is spread rather than always landing on the same people). One
Lua call returns the ids and packed profiles together, so work per request stays bounded in the
densest city and no request ever scans all helpers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import h3
from redis.asyncio import Redis

from leanon_matching.convert import pack_helper, unpack_helper
from leanon_matching.domain.model import Helper, Request

INDEX_VERSION = "2"


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    max_radius_km: float
    resolution: int  # H3 resolution whose 2-ring disk covers max_radius_km


TIERS: tuple[Tier, ...] = (
    Tier("t10", 10, 5),
    Tier("t30", 30, 4),
    Tier("t80", 80, 3),
    Tier("t200", 200, 2),
    Tier("t500", 500, 1),
)
RING = 2
PER_CELL = 24
MAX_CANDIDATES = 256

# KEYS: sorted sets, nearest first. ARGV: min level, per-key limit, total limit, offset seed,
# profile key prefix. Returns id, packed profile, id, packed profile, ...
_CANDIDATES = """
local min_level, per_key = ARGV[1], tonumber(ARGV[2])
local total, seed = tonumber(ARGV[3]), tonumber(ARGV[4])
local out, seen, n = {}, {}, 0
for k = 1, #KEYS do
  local count = redis.call('ZCOUNT', KEYS[k], min_level, '+inf')
  if count > 0 then
    local ids
    if count <= per_key then
      ids = redis.call('ZRANGE', KEYS[k], min_level, '+inf', 'BYSCORE')
    else
      local offset = (seed + k * 7919) % (count - per_key + 1)
      ids = redis.call('ZRANGE', KEYS[k], min_level, '+inf', 'BYSCORE', 'LIMIT', offset, per_key)
    end
    for i = 1, #ids do
      local id = ids[i]
      if not seen[id] then
        seen[id] = true
        local profile = redis.call('GET', ARGV[5] .. id)
        if profile then
          out[#out + 1] = id
          out[#out + 1] = profile
          n = n + 1
          if n >= total then return out end
        end
      end
    end
  end
end
return out
"""


def tier_for(radius_km: float) -> Tier:
    return next(t for t in TIERS if radius_km <= t.max_radius_km)


class HelperIndex:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._p = prefix
        self._candidates = redis.register_script(_CANDIDATES)

    # -- keys ------------------------------------------------------------------------------
    def _profile_prefix(self, org: str) -> str:
        return f"{self._p}h:{org}:"

    def _cell_set(self, org: str, tier: str, cell: str, skill: str) -> str:
        return f"{self._p}hz:{org}:{tier}:{cell}:{skill}"

    def _skill_set(self, org: str, skill: str) -> str:
        return f"{self._p}hr:{org}:{skill}"

    @property
    def version_key(self) -> str:
        return f"{self._p}index:version"

    def _memberships(self, h: Helper) -> list[tuple[str, int]]:
        """(sorted set, score) for every set the helper belongs in."""
        out = [(self._skill_set(h.org, s), level) for s, level in h.skills.items()]
        if h.lat is not None and h.lon is not None:
            tier = tier_for(h.radius_km)
            cell = h3.latlng_to_cell(h.lat, h.lon, tier.resolution)
            out += [(self._cell_set(h.org, tier.name, cell, s), lv) for s, lv in h.skills.items()]
        return out

    # -- writes ----------------------------------------------------------------------------
    async def upsert(self, helper: Helper) -> None:
        await self.apply([(helper.org, helper.id, helper)])

    async def remove(self, org: str, helper_id: str) -> None:
        await self.apply([(org, helper_id, None)])

    async def apply(self, changes: Iterable[tuple[str, str, Helper | None]]) -> None:
        """Upserts (helper) and removals (None) in order, in two round trips for the lot:
        previous profiles are read first so every set a helper leaves is cleaned."""
        latest: dict[tuple[str, str], Helper | None] = {}
        for org, helper_id, helper in changes:
            latest.pop((org, helper_id), None)
            latest[(org, helper_id)] = helper
        if not latest:
            return
        keys = list(latest)
        olds = await self._r.mget([self._profile_prefix(o) + i for o, i in keys])
        async with self._r.pipeline(transaction=False) as pipe:
            for (org, helper_id), old_raw, helper in zip(keys, olds, latest.values(), strict=True):
                if old_raw is not None:
                    for key, _ in self._memberships(unpack_helper(org, helper_id, old_raw)):
                        pipe.zrem(key, helper_id)
                if helper is None:
                    pipe.delete(self._profile_prefix(org) + helper_id)
                    continue
                for key, level in self._memberships(helper):
                    pipe.zadd(key, {helper_id: level})
                pipe.set(self._profile_prefix(org) + helper_id, pack_helper(helper))
            await pipe.execute()

    # -- reads -----------------------------------------------------------------------------
    async def get_many(self, org: str, ids: Sequence[str]) -> list[Helper]:
        if not ids:
            return []
        raws = await self._r.mget([self._profile_prefix(org) + i for i in ids])
        return [unpack_helper(org, i, r) for i, r in zip(ids, raws, strict=True) if r]

    def search_keys(self, request: Request, skill: str) -> list[str]:
        """The sorted sets to look in, nearest first: each tier's own cell, then the rings."""
        if request.lat is None or request.lon is None:
            return [self._skill_set(request.org, skill)]
        rings: list[list[str]] = [[] for _ in range(RING + 1)]
        for tier in TIERS:
            center = h3.latlng_to_cell(request.lat, request.lon, tier.resolution)
            for distance, cells in enumerate(h3.grid_ring(center, d) for d in range(RING + 1)):
                rings[distance] += [self._cell_set(request.org, tier.name, c, skill) for c in cells]
        return [key for ring in rings for key in ring]

    async def candidates(self, request: Request, *, limit: int = MAX_CANDIDATES) -> list[Helper]:
        """At most `limit` helpers holding the rarest required skill at its level, nearest
        cells first; the hard constraints are checked afterwards by the caller."""
        skills = list(request.skills)
        if len(skills) > 1:
            async with self._r.pipeline(transaction=False) as pipe:
                for s in skills:
                    pipe.zcard(self._skill_set(request.org, s))
                sizes = await pipe.execute()
            skill = skills[sizes.index(min(sizes))]
        else:
            skill = skills[0]
        keys = self.search_keys(request, skill)
        seed = random.getrandbits(30)
        flat = await self._candidates(
            keys=keys,
            args=[
                request.skills[skill],
                PER_CELL if len(keys) > 1 else limit,
                limit,
                seed,
                self._profile_prefix(request.org),
            ],
        )
        org = request.org
        return [
            unpack_helper(org, _text(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)
        ]

    async def is_current(self) -> bool:
        raw = await self._r.get(self.version_key)
        return raw is not None and _text(raw) == INDEX_VERSION

    async def mark_current(self) -> None:
        await self._r.set(self.version_key, INDEX_VERSION)

    async def clear(self) -> int:
        """Drop every index key under this prefix (an old version's, or a partial rebuild's)."""
        removed = 0
        for pattern in (
            f"{self._p}h:*",
            f"{self._p}hz:*",
            f"{self._p}hr:*",
            f"{self._p}hc:*",
            f"{self._p}hs:*",
        ):
            batch: list[bytes | str] = []
            async for key in self._r.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    removed += await self._r.unlink(*batch)
                    batch = []
            if batch:
                removed += await self._r.unlink(*batch)
        await self._r.delete(self.version_key)
        return removed


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
