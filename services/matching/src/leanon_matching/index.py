"""The helper index in Redis: sets per (org, radius tier, H3 cell, skill), packed profiles.

A helper is filed in its home cell at the resolution of its radius tier. A request looks in
its own cell and the two rings around it at each tier, which covers every helper whose radius
reaches it, so candidate generation never scans all helpers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import h3
import orjson
from redis.asyncio import Redis

from leanon_matching.convert import pack_helper, unpack_helper
from leanon_matching.domain.model import Helper, Request

INDEX_VERSION = "1"


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
# Work per request stays bounded in a dense city: at most this many profiles are examined.
# (A sample, for now: pre-ranked sets that keep the best rather than a random few come with
# the matching issue.)
MAX_CANDIDATES = 256


def tier_for(radius_km: float) -> Tier:
    return next(t for t in TIERS if radius_km <= t.max_radius_km)


class HelperIndex:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._p = prefix

    def _profile(self, org: str, helper_id: str) -> str:
        return f"{self._p}h:{org}:{helper_id}"

    def _cell_set(self, org: str, tier: str, cell: str, skill: str) -> str:
        return f"{self._p}hc:{org}:{tier}:{cell}:{skill}"

    def _skill_set(self, org: str, skill: str) -> str:
        return f"{self._p}hs:{org}:{skill}"

    @property
    def version_key(self) -> str:
        return f"{self._p}index:version"

    def _sets_of(self, h: Helper) -> list[str]:
        keys = [self._skill_set(h.org, s) for s in h.skills]
        if h.lat is not None and h.lon is not None:
            tier = tier_for(h.radius_km)
            cell = h3.latlng_to_cell(h.lat, h.lon, tier.resolution)
            keys += [self._cell_set(h.org, tier.name, cell, s) for s in h.skills]
        return keys

    async def upsert(self, helper: Helper) -> None:
        """Index the helper, first leaving every set its previous profile was in."""
        old = await self._load(helper.org, helper.id)
        async with self._r.pipeline(transaction=True) as pipe:
            if old is not None:
                for key in self._sets_of(old):
                    pipe.srem(key, helper.id)
            for key in self._sets_of(helper):
                pipe.sadd(key, helper.id)
            pipe.set(self._profile(helper.org, helper.id), orjson.dumps(pack_helper(helper)))
            await pipe.execute()

    async def remove(self, org: str, helper_id: str) -> None:
        old = await self._load(org, helper_id)
        async with self._r.pipeline(transaction=True) as pipe:
            if old is not None:
                for key in self._sets_of(old):
                    pipe.srem(key, helper_id)
            pipe.delete(self._profile(org, helper_id))
            await pipe.execute()

    async def _load(self, org: str, helper_id: str) -> Helper | None:
        raw = await self._r.get(self._profile(org, helper_id))
        return unpack_helper(orjson.loads(raw)) if raw else None

    async def get_many(self, org: str, ids: Sequence[str]) -> list[Helper]:
        if not ids:
            return []
        raws = await self._r.mget([self._profile(org, i) for i in ids])
        return [unpack_helper(orjson.loads(r)) for r in raws if r]

    async def candidates(self, request: Request) -> list[Helper]:
        """Helpers that hold the rarest required skill and whose radius may reach the request."""
        skills = list(request.skills)
        async with self._r.pipeline(transaction=False) as pipe:
            for s in skills:
                pipe.scard(self._skill_set(request.org, s))
            sizes = await pipe.execute()
        if min(sizes) == 0:
            return []
        rarest = skills[sizes.index(min(sizes))]
        raw_ids: Iterable[bytes | str]
        if request.lat is None or request.lon is None:
            sampled = await self._r.srandmember(
                self._skill_set(request.org, rarest), MAX_CANDIDATES
            )
            raw_ids = sampled if isinstance(sampled, list) else []
        else:
            keys = []
            for tier in TIERS:
                center = h3.latlng_to_cell(request.lat, request.lon, tier.resolution)
                keys += [
                    self._cell_set(request.org, tier.name, c, rarest)
                    for c in h3.grid_disk(center, RING)
                ]
            raw_ids = await self._r.sunion(keys)
        ids = sorted(i.decode() if isinstance(i, bytes) else str(i) for i in raw_ids)
        if len(ids) > MAX_CANDIDATES:
            ids = random.Random(request.id).sample(ids, MAX_CANDIDATES)
        return await self.get_many(request.org, ids)

    async def is_current(self) -> bool:
        raw = await self._r.get(self.version_key)
        return (
            raw is not None and (raw.decode() if isinstance(raw, bytes) else raw) == INDEX_VERSION
        )

    async def mark_current(self) -> None:
        await self._r.set(self.version_key, INDEX_VERSION)
