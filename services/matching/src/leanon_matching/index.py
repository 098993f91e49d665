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
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import h3
from redis.asyncio import Redis

from leanon_matching.convert import Packed, helper_from_json, pack_helper, unpack_helper
from leanon_matching.domain.model import Helper, Request

INDEX_VERSION = "4"


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
ORG_SHARDS = 1024
PER_RING = (16, 8, 4)  # helpers read per set in the own cell, the first ring, the second
MAX_CANDIDATES = 64

# The candidate search, in one round trip. ARGV: (unused); per-set limits for ring 0, ring 1
# and ring 2; how many sets are ring 0 and ring 1; total limit; offset seed; profile key
# prefix; sorted-set key prefix; the required skills as "skill:level,..."; the request's lat
# and lon ("" when remote); the sets
# to read as "tier:cell" joined by ",", nearest first ("*<n>": shard n of the org-wide sets).
# Keys are built here, not passed, which keeps a call with ~100 sets cheap to send; it also
# means one org's index must live on one Redis node (no cluster slots).
# Within a set, helpers at or above the level are read by rank (O(log n) to any offset) from
# a random offset, so a dense city does not always offer the same people.
# Returns id, packed profile, id, packed profile, ...
_CANDIDATES = """
local limits = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local ring0, ring1 = tonumber(ARGV[5]), tonumber(ARGV[6])
local total, seed = tonumber(ARGV[7]), tonumber(ARGV[8])
local profile_prefix, set_prefix = ARGV[9], ARGV[10]
-- The rarest required skill (smallest org-wide set) drives the search; the others are
-- checked on each profile afterwards.
local skill, min_level, rarest
for name, level in string.gmatch(ARGV[11], '([^,:]+):(%d+)') do
  local size = tonumber(redis.call('HGET', set_prefix .. '#', name)) or 0
  if rarest == nil or size < rarest then skill, min_level, rarest = name, tonumber(level), size end
end
if rarest == nil or rarest == 0 then return {} end
local lat, lon = tonumber(ARGV[12]), tonumber(ARGV[13])
local located = ARGV[12] ~= ''
local sets = {}
for cell in string.gmatch(ARGV[14], '[^,]+') do sets[#sets + 1] = cell end
local coslat, km_per_degree = math.cos(math.rad(lat or 0)), 111.195
-- A cheap first cut on distance (the packed header holds radius and position); the exact
-- great-circle check follows in Python, so the margin only has to be generous.
local function within(profile)
  local _, _, radius10, hlat, hlon = struct.unpack('<BBHff', profile)
  if hlat ~= hlat then return false end
  local dy = (hlat - lat) * km_per_degree
  local dx = (hlon - lon) * km_per_degree * coslat
  local reach = radius10 / 10 * 1.05 + 1
  return dx * dx + dy * dy <= reach * reach
end
-- Optional, ARGV 15-18: the load-hash prefix, the window (epoch seconds) and the recent-offer
-- hashes joined by ","; then each helper also comes with its overlapping load and its offers
-- of the last days, saving the caller a second round trip.
local function with_loads(out, found)
  if ARGV[15] == nil or ARGV[15] == '' or #found == 0 then return out end
  local start, stop = tonumber(ARGV[16]), tonumber(ARGV[17])
  local recent = {}
  for k = 1, #found do recent[k] = 0 end
  for day in string.gmatch(ARGV[18], '[^,]+') do
    local counts = redis.call('HMGET', day, unpack(found))
    for k = 1, #found do recent[k] = recent[k] + (tonumber(counts[k]) or 0) end
  end
  local result = {}
  for k = 1, #found do
    local vals, load = redis.call('HVALS', ARGV[15] .. found[k]), 0
    for i = 1, #vals do
      local s, e = string.match(vals[i], '([^,]+),([^,]+)')
      if tonumber(s) < stop and start < tonumber(e) then load = load + 1 end
    end
    result[#result + 1] = out[2 * k - 1]
    result[#result + 1] = out[2 * k]
    result[#result + 1] = load
    result[#result + 1] = recent[k]
  end
  return result
end
local out, seen, found, n = {}, {}, {}, 0
for a = 1, #sets do
  local index = a - 1
  local per_key = limits[3]
  if index < ring0 then
    per_key = limits[1]
  elseif index < ring0 + ring1 then
    per_key = limits[2]
  end
  local key = set_prefix .. sets[a] .. ':' .. skill
  if string.sub(sets[a], 1, 1) == '*' then  -- an org-wide shard: "*<n>"
    key = set_prefix .. skill .. ':' .. string.sub(sets[a], 2)
  end
  local size = redis.call('ZCARD', key)
  if size > 0 then
    local below = redis.call('ZCOUNT', key, '-inf', '(' .. min_level)
    local count = size - below
    if count > 0 then
      local first = below
      if count > per_key then first = below + (seed + a * 7919) % (count - per_key + 1) end
      local ids = redis.call('ZRANGE', key, first, first + math.min(count, per_key) - 1)
      for i = 1, #ids do
        local id = ids[i]
        if not seen[id] then
          seen[id] = true
          local profile = redis.call('GET', profile_prefix .. id)
          if profile and (not located or within(profile)) then
            found[#found + 1] = id
            out[#out + 1] = id
            out[#out + 1] = profile
            n = n + 1
            if n >= total then return with_loads(out, found) end
          end
        end
      end
    end
  end
end
return with_loads(out, found)
"""


# Index writes in one call. ARGV: operations, each an opcode and its arguments:
# "a" set member level (ZADD), "r" set member (ZREM), "s" key value (SET), "d" key (DEL),
# "A"/"R" set member level|"" counts skill: ZADD/ZREM that also keep the org's skill sizes.
_APPLY = """
local i = 1
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'a' then
    redis.call('ZADD', ARGV[i + 1], ARGV[i + 3], ARGV[i + 2]); i = i + 4
  elseif op == 'r' then
    redis.call('ZREM', ARGV[i + 1], ARGV[i + 2]); i = i + 3
  elseif op == 's' then
    redis.call('SET', ARGV[i + 1], ARGV[i + 2]); i = i + 3
  elseif op == 'A' then  -- a counted add: the org's size for the skill grows when new
    if redis.call('ZADD', ARGV[i + 1], ARGV[i + 3], ARGV[i + 2]) == 1 then
      redis.call('HINCRBY', ARGV[i + 4], ARGV[i + 5], 1)
    end
    i = i + 6
  elseif op == 'R' then
    if redis.call('ZREM', ARGV[i + 1], ARGV[i + 2]) == 1 then
      redis.call('HINCRBY', ARGV[i + 4], ARGV[i + 5], -1)
    end
    i = i + 6
  elseif op == 'd' then
    redis.call('DEL', ARGV[i + 1]); i = i + 2
  else
    return redis.error_reply('unknown index operation ' .. tostring(op))
  end
end
return 1
"""
APPLY_CHUNK = 10_000  # operations per call

# A bulk load into an index that started empty: nothing to read back or clean up, so each
# helper travels as five arguments and the script builds its keys. ARGV: profile key prefix,
# set key prefix (org's), the org's skill-sizes hash, then per helper: id, packed profile,
# "tier:cell" ("" when remote), its org-wide shard, skills as "name:level,...".
_LOAD = """
local profiles, sets, sizes = ARGV[1], ARGV[2], ARGV[3]
local added = {}
for i = 4, #ARGV, 5 do
  local id, cell, shard = ARGV[i], ARGV[i + 2], ARGV[i + 3]
  redis.call('SET', profiles .. id, ARGV[i + 1])
  for name, level in string.gmatch(ARGV[i + 4], '([^,:]+):(%d+)') do
    if redis.call('ZADD', sets .. name .. ':' .. shard, level, id) == 1 then
      added[name] = (added[name] or 0) + 1
    end
    if cell ~= '' then redis.call('ZADD', sets .. cell .. ':' .. name, level, id) end
  end
end
for name, n in pairs(added) do redis.call('HINCRBY', sizes, name, n) end
return 1
"""
LOAD_CHUNK = 10_000  # helpers per call: a rebuild's consumer batch in one call


@dataclass(slots=True)
class BulkLoad:
    """A batch of a rebuild, planned: updates that need apply, and per org _LOAD's arguments."""

    again: list[tuple[str, str, Helper | None]]
    fresh: dict[str, list[str | bytes]]


@dataclass(frozen=True, slots=True)
class LoadQuery:
    """Where capacity and recent offers live (see reservations.py), to read with candidates."""

    load_prefix: str
    recent_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    helper: Helper
    load: int  # offers and assignments it holds that overlap the request window
    recent: int  # offers it received over the last days


def tier_for(radius_km: float) -> Tier:
    return next(t for t in TIERS if radius_km <= t.max_radius_km)


class HelperIndex:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._p = prefix
        self._candidates = redis.register_script(_CANDIDATES)
        self._apply = redis.register_script(_APPLY)
        self._load = redis.register_script(_LOAD)

    # -- keys ------------------------------------------------------------------------------
    def _profile_prefix(self, org: str) -> str:
        return f"{self._p}h:{org}:"

    def _cell_set(self, org: str, tier: str, cell: str, skill: str) -> str:
        return f"{self._p}hz:{org}:{tier}:{cell}:{skill}"

    def _skill_shard(self, org: str, skill: str, helper_id: str) -> str:
        """Org-wide sets are sharded so that each stays small enough for Redis's compact
        listpack encoding (five times smaller than a skiplist entry)."""
        return f"{self._p}hz:{org}:{skill}:{_shard(helper_id)}"

    def _skill_counts(self, org: str) -> str:
        return f"{self._p}hz:{org}:#"

    @property
    def version_key(self) -> str:
        return f"{self._p}index:version"

    def _memberships(self, h: Helper) -> list[tuple[str, int, str | None]]:
        """(sorted set, score, skill counted in the org's skill sizes or None) for every set
        the helper belongs in."""
        out: list[tuple[str, int, str | None]] = [
            (self._skill_shard(h.org, s, h.id), level, s) for s, level in h.skills.items()
        ]
        if h.lat is not None and h.lon is not None:
            tier = tier_for(h.radius_km)
            cell = h3.latlng_to_cell(h.lat, h.lon, tier.resolution)
            out += [
                (self._cell_set(h.org, tier.name, cell, s), lv, None) for s, lv in h.skills.items()
            ]
        return out

    # -- writes ----------------------------------------------------------------------------
    async def upsert(self, helper: Helper) -> None:
        await self.apply([(helper.org, helper.id, helper)])

    async def remove(self, org: str, helper_id: str) -> None:
        await self.apply([(org, helper_id, None)])

    async def apply(self, changes: Iterable[tuple[str, str, Helper | None]]) -> None:
        """Upserts (helper) and removals (None) in order, in two round trips for the lot:
        previous profiles are read first so every set a helper leaves is cleaned, then all
        writes go in one Lua call (a pipeline of 25,000 small commands costs redis-py far
        more in per-reply overhead than Redis spends applying them)."""
        latest: dict[tuple[str, str], Helper | None] = {}
        for org, helper_id, helper in changes:
            latest.pop((org, helper_id), None)
            latest[(org, helper_id)] = helper
        if not latest:
            return
        keys = list(latest)
        olds = await self._r.mget([self._profile_prefix(o) + i for o, i in keys])
        ops: list[tuple[str | bytes | int, ...]] = []
        for (org, helper_id), old_raw, helper in zip(keys, olds, latest.values(), strict=True):
            if old_raw is not None:
                old = unpack_helper(org, helper_id, _raw(old_raw))
                for key, _, counted in self._memberships(old):
                    if counted is None:
                        ops.append(("r", key, helper_id))
                    else:
                        ops.append(("R", key, helper_id, "", self._skill_counts(org), counted))
            if helper is None:
                ops.append(("d", self._profile_prefix(org) + helper_id))
                continue
            for key, level, counted in self._memberships(helper):
                if counted is None:
                    ops.append(("a", key, helper_id, level))
                else:
                    ops.append(("A", key, helper_id, level, self._skill_counts(org), counted))
            ops.append(("s", self._profile_prefix(org) + helper_id, pack_helper(helper)))
        for start in range(0, len(ops), APPLY_CHUNK):
            await self._apply(
                keys=[], args=[a for op in ops[start : start + APPLY_CHUNK] for a in op]
            )

    def prepare_load(
        self, changes: Iterable[tuple[str, str, Packed | None]], loaded: set[tuple[str, str]]
    ) -> BulkLoad:
        """Plan changes for an index that this rebuild started from empty (`loaded` holds the
        helpers written so far, and gains these). A helper written for the first time has no
        earlier sets to leave, so it goes without a read-back, in the compact form of _LOAD; a
        second version of one, or a removal, goes through apply. Planning is all the Python
        work, so a rebuild can plan one batch while Redis writes the previous."""
        latest: dict[tuple[str, str], Packed | None] = {}
        for org, helper_id, packed in changes:
            latest.pop((org, helper_id), None)
            latest[(org, helper_id)] = packed
        bulk = BulkLoad([], {})
        for (org, helper_id), p in latest.items():
            if p is None or (org, helper_id) in loaded:
                helper = None if p is None else helper_from_json(p.record)
                bulk.again.append((org, helper_id, helper))
                if p is None:
                    loaded.discard((org, helper_id))
                continue
            loaded.add((org, helper_id))
            cell = ""
            if p.lat is not None and p.lon is not None:
                tier = tier_for(p.radius_km)
                cell = f"{tier.name}:{h3.latlng_to_cell(p.lat, p.lon, tier.resolution)}"
            skills = ",".join(f"{name}:{level}" for name, level in p.skills.items())
            bulk.fresh.setdefault(org, []).extend(
                (helper_id, p.packed, cell, str(_shard(helper_id)), skills)
            )
        return bulk

    async def load(self, bulk: BulkLoad) -> None:
        """Write a planned bulk load (see prepare_load)."""
        if bulk.again:
            await self.apply(bulk.again)
        step = 5 * LOAD_CHUNK
        for org, args in bulk.fresh.items():
            head: list[str | bytes] = [
                self._profile_prefix(org),
                f"{self._p}hz:{org}:",
                self._skill_counts(org),
            ]
            for start in range(0, len(args), step):
                await self._load(keys=[], args=head + args[start : start + step])

    # -- reads -----------------------------------------------------------------------------
    def search_cells(self, request: Request) -> tuple[list[str], int, int]:
        """The sets to look in as "tier:cell", nearest first (every tier's own cell, then the
        first ring, then the second), with how many are ring 0 and ring 1; for a request
        without a location, every org-wide shard from a random one on."""
        if request.lat is None or request.lon is None:
            first = random.randrange(ORG_SHARDS)
            return [f"*{(first + i) % ORG_SHARDS}" for i in range(ORG_SHARDS)], ORG_SHARDS, 0
        disks = [
            _disk(tier.name, h3.latlng_to_cell(request.lat, request.lon, tier.resolution))
            for tier in TIERS
        ]
        rings = [[cell for disk in disks for cell in disk[d]] for d in range(RING + 1)]
        return [cell for ring in rings for cell in ring], len(rings[0]), len(rings[1])

    async def candidates(
        self, request: Request, *, limit: int = MAX_CANDIDATES, loads: LoadQuery | None = None
    ) -> list[Candidate]:
        """At most `limit` helpers holding the rarest required skill at its level and roughly
        within their radius of the request, nearest cells first, with their current load when
        asked; the exact hard constraints are checked afterwards by the caller."""
        cells, ring0, ring1 = self.search_cells(request)
        limits = PER_RING if request.lat is not None else (limit, limit, limit)
        args: list[str | int | float] = [
            "",
            *limits,
            ring0,
            ring1,
            limit,
            random.getrandbits(30),
            self._profile_prefix(request.org),
            f"{self._p}hz:{request.org}:",
            ",".join(f"{name}:{level}" for name, level in request.skills.items()),
            "" if request.lat is None else request.lat,
            "" if request.lon is None else request.lon,
            ",".join(cells),
        ]
        if loads is not None:
            args += [
                loads.load_prefix,
                int(request.window.start.timestamp()),
                int(request.window.end.timestamp()),
                ",".join(loads.recent_keys),
            ]
        flat = await self._candidates(keys=[], args=args)
        org, step = request.org, 2 if loads is None else 4
        return [
            Candidate(
                unpack_helper(org, _text(flat[i]), bytes(flat[i + 1])),
                int(flat[i + 2]) if loads is not None else 0,
                int(flat[i + 3]) if loads is not None else 0,
            )
            for i in range(0, len(flat), step)
        ]

    async def is_current(self) -> bool:
        raw = await self._r.get(self.version_key)
        return raw is not None and _text(raw) == INDEX_VERSION

    @property
    def building_key(self) -> str:
        return f"{self._p}index:building"

    async def mark_current(self) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self.version_key, INDEX_VERSION)
            pipe.delete(self.building_key)
            await pipe.execute()

    async def clear(self) -> int:
        """Drop every index key under this prefix (an old version's, or a partial rebuild's),
        and mark the index as being built until `mark_current`.

        Finding the keys means scanning the whole keyspace, so when neither a version nor an
        unfinished build was ever recorded here (a new prefix, or a Redis that lost
        everything) there is nothing of this index to find and the scan is skipped.
        """
        had_index = await self._r.exists(self.version_key, self.building_key)
        await self._r.set(self.building_key, b"1")
        if not had_index:
            return 0
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


@lru_cache(maxsize=65_536)
def _disk(tier: str, center: str) -> tuple[tuple[str, ...], ...]:
    """A cell's rings 0..RING as "tier:cell" names. Cached: requests from one neighbourhood
    share them, and walking H3 rings was a tenth of a decision's Python time."""
    return tuple(
        tuple(f"{tier}:{cell}" for cell in h3.grid_ring(center, distance))
        for distance in range(RING + 1)
    )


def _shard(helper_id: str) -> int:
    return zlib.crc32(helper_id.encode()) % ORG_SHARDS


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
