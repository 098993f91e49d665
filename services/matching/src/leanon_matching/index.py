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
from datetime import datetime
from functools import lru_cache
from typing import Any

import h3
from redis.asyncio import Redis

from leanon_matching.convert import pack_helper, unpack_helper
from leanon_matching.domain.availability import local_span
from leanon_matching.domain.eligibility import Check, Rejection
from leanon_matching.domain.model import Helper, Request
from leanon_shared.coalesce import CoalescedScript

INDEX_VERSION = "5"


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
PER_RING = (32, 8, 4)  # helpers read per set in the own cell, the first ring, the second
MAX_CANDIDATES = 64  # helpers examined per request
MAX_ZONES = 64  # time zones per area the search screens availability in; others: the caller
ZONE_AREA_RESOLUTION = 1  # H3 cells of ~600 km across: the areas whose zones are remembered

# The candidate search, in one round trip. ARGV: per-set limits for ring 0, ring 1 and ring 2; how
# many sets are ring 0 and ring 1; how many helpers to examine (up to eight times more while none
# passes the screen); offset seed; profile key prefix; sorted-set key prefix; the required skills as
# "skill:level,..."; the request's lat and lon ("" when remote); the sets to read as "tier:cell"
# joined by ",", nearest first ("*<n>": shard n of the org-wide sets); the request's languages
# joined by "," ("" for any); the request window in local time per time zone,
# "zone=weekday,start,end;..." in minutes (zones missing here are left to the caller); the coverage
# threshold; then optionally the load-hash prefix, the window in epoch seconds and the recent-offer
# hashes joined by ",".
# Keys are built here, not passed, which keeps a call with ~100 sets cheap to send; it also
# means one org's index must live on one Redis node (no cluster slots).
# Within a set, helpers at or above the level are read by rank from a random offset (so a dense city
# does not always offer the same people), and their profiles with one MGET per set.
# Each helper within rough reach counts as examined and is screened here against the cheap
# hard constraints, in the order domain/eligibility.py checks them: every required skill,
# a shared language, the exact distance, and availability where the weekly slots alone decide
# and cover less of the window than the threshold (the same-day case of
# availability.same_day_coverage). Only those it cannot rule out come back, with their load:
# a decision's helpers were two thirds ruled out, and decoding and checking them in Python
# cost more than screening them here.
# Returns examined, {reason, count, ...}, then id, packed profile, load, recent offers, ...
_CANDIDATES = """
local byte, sub, min, max = string.byte, string.sub, math.min, math.max
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])}
local ring0, ring1 = tonumber(ARGV[4]), tonumber(ARGV[5])
local total, seed = tonumber(ARGV[6]), tonumber(ARGV[7])
-- Until one helper passes the screen the search goes on past its budget, up to this many
-- times it: a request needing two skills or a rare language often met 64 helpers of its
-- rarest skill within reach and none that could take it, and went unmatched while able
-- helpers were a few sets further on.
local most = total * 8
local profile_prefix, set_prefix = ARGV[8], ARGV[9]
-- The rarest required skill (smallest org-wide set) drives the search; the others are
-- checked on each profile.
local required, names = {}, {}
for name, level in string.gmatch(ARGV[10], '([^,:]+):(%d+)') do
  required[#required + 1] = {name, tonumber(level)}
  names[#names + 1] = name
end
if #required == 0 then return {0, {}} end
local sizes = redis.call('HMGET', set_prefix .. '#', unpack(names))
local skill, min_level, rarest
for i = 1, #required do
  local size = tonumber(sizes[i]) or 0
  if rarest == nil or size < rarest then
    skill, min_level, rarest = required[i][1], required[i][2], size
  end
end
if rarest == 0 then return {0, {}} end
local located = ARGV[11] ~= ''
local lat, lon = tonumber(ARGV[11]) or 0, tonumber(ARGV[12]) or 0
local sets = {}
for cell in string.gmatch(ARGV[13], '[^,]+') do sets[#sets + 1] = cell end
local languages, any_language = {}, false
for code in string.gmatch(ARGV[14], '[^,]+') do languages[code], any_language = true, true end
local spans = {}
for zone, day, a, b in string.gmatch(ARGV[15], '([^=;]+)=(%d+),([^,;]+),([^,;]+)') do
  spans[zone] = {tonumber(day), tonumber(a), tonumber(b)}
end
local threshold = tonumber(ARGV[16])
local function by_start(x, y) return x[1] < y[1] end
local rad = math.pi / 180
local cos_lat, km_per_degree = math.cos(lat * rad), 111.195

-- Why the helper cannot take the request, or nil when the caller must decide. Packed
-- profile (convert.py): <BBHff header, zone, skills, languages, weekly slots, windows.
local function screen(p, radius10, hlat, hlon)
  local pos = 13
  local zone = sub(p, pos + 1, pos + byte(p, pos))
  pos = pos + 1 + byte(p, pos)
  local count = byte(p, pos)
  pos = pos + 1
  if #required > 1 then
    local have = {}
    for _ = 1, count do
      local n = byte(p, pos)
      have[sub(p, pos + 1, pos + n)] = byte(p, pos + 1 + n)
      pos = pos + 2 + n
    end
    for i = 1, #required do
      if (have[required[i][1]] or 0) < required[i][2] then return 'skill:' .. required[i][1] end
    end
  else
    for _ = 1, count do pos = pos + 2 + byte(p, pos) end
  end
  count = byte(p, pos)
  pos = pos + 1
  if any_language then
    local shared = false
    for i = 0, count - 1 do
      if languages[sub(p, pos + 2 * i, pos + 2 * i + 1)] then shared = true; break end
    end
    if not shared then return 'language' end
  end
  pos = pos + 2 * count
  if located then  -- haversine, as domain/geo.py; a hair of slack leaves ties to the caller
    local dlat, dlon = (lat - hlat) * rad, (lon - hlon) * rad
    local h = math.sin(dlat / 2) ^ 2
      + math.cos(hlat * rad) * cos_lat * math.sin(dlon / 2) ^ 2
    if 2 * 6371.0088 * math.asin(min(1, math.sqrt(h))) > radius10 / 10 * (1 + 1e-9) then
      return 'distance'
    end
  end
  local span = spans[zone]
  count = byte(p, pos)
  if span == nil or byte(p, pos + 1 + 5 * count) ~= 0 then return nil end  -- windows: caller
  pos = pos + 1
  local day, a, b = span[1], span[2], span[3]
  local ranges = {}
  for _ = 1, count do  -- as availability.same_day_coverage: the slots that touch the window
    local d = byte(p, pos)
    local s = byte(p, pos + 1) + 256 * byte(p, pos + 2)
    local e = byte(p, pos + 3) + 256 * byte(p, pos + 4)
    pos = pos + 5
    if d == day then
      local upper = e
      if e <= s then upper = 1440 end
      if min(upper, b) > max(s, a) then ranges[#ranges + 1] = {s, upper} end
    end
    if e <= s and (d + 1) % 7 == day and min(e, b) > a then ranges[#ranges + 1] = {0, e} end
  end
  if #ranges == 0 then return 'availability' end
  if #ranges > 1 then table.sort(ranges, by_start) end
  local covered, reach = 0, a
  for i = 1, #ranges do
    local lo, hi = max(ranges[i][1], reach), min(ranges[i][2], b)
    if hi > lo then
      covered = covered + hi - lo
      reach = hi
    end
  end
  -- Short of the threshold by more than rounding: check() would say the same.
  if covered / (b - a) + 1e-6 < threshold then return 'availability' end
  return nil
end

local out, seen, found, tally, examined = {0, {}}, {}, {}, {}, 0
-- Screen a set's members (ids, or in cell sets ids with the helper's radius and location, so
-- that helpers out of reach are dropped without reading their profiles). True when enough
-- helpers have been examined.
local function examine(members)
  local ids, keys = {}, {}
  for i = 1, #members do
    local m = members[i]
    if not seen[m] then
      seen[m] = true
      local id, near = m, true
      if located then  -- a cheap first cut on distance
        local radius10, hlat, hlon = struct.unpack('<Hff', m, #m - 9)
        id = sub(m, 1, #m - 10)
        local dy = (hlat - lat) * km_per_degree
        local dx = (hlon - lon) * km_per_degree * cos_lat
        local reach = radius10 / 10 * 1.05 + 1
        near = dx * dx + dy * dy <= reach * reach
      end
      if near then
        ids[#ids + 1] = id
        keys[#keys + 1] = profile_prefix .. id
      end
    end
  end
  if #ids == 0 then return false end
  local profiles = redis.call('MGET', unpack(keys))
  for i = 1, #ids do
    local p = profiles[i]
    if p then
      local _, _, radius10, hlat, hlon = struct.unpack('<BBHff', p)
      examined = examined + 1
      local why = screen(p, radius10, hlat, hlon)
      if why then
        tally[why] = (tally[why] or 0) + 1
      else
        found[#found + 1] = ids[i]
        out[#out + 1] = ids[i]
        out[#out + 1] = p
        out[#out + 1] = 0
        out[#out + 1] = 0
      end
      if examined >= most or (examined >= total and #found > 0) then return true end
    end
  end
  return false
end

-- How many helpers of each cell set hold the skill at the level, read from the org's counts
-- a few dozen sets at a time (one HMGET instead of a ZCOUNT per set); org-wide shards are
-- counted directly. Sets are ordered by level, highest first, so those at the level are the
-- first `count` by rank.
local counts_key, counts = set_prefix .. '>', {}
for a = 1, #sets do
  local per_key = limits[3]
  if a <= ring0 then
    per_key = limits[1]
  elseif a <= ring0 + ring1 then
    per_key = limits[2]
  end
  local key, count
  if byte(sets[a], 1) == 42 then  -- "*<n>": an org-wide shard
    key = set_prefix .. skill .. ':' .. sub(sets[a], 2)
    count = redis.call('ZCOUNT', key, min_level, '+inf')
  else
    key = set_prefix .. sets[a] .. ':' .. skill
    if counts[a] == nil then
      local fields = {}
      for b = a, min(#sets, a + 31) do
        fields[#fields + 1] = sets[b] .. ':' .. skill .. '>' .. min_level
      end
      local got = redis.call('HMGET', counts_key, unpack(fields))
      for b = 1, #fields do counts[a + b - 1] = tonumber(got[b]) or 0 end
    end
    count = counts[a]
  end
  if count > 0 then
    local first = 0
    if count > per_key then first = (seed + a * 7919) % (count - per_key + 1) end
    local members = redis.call('ZRANGE', key, first, first + min(count, per_key) - 1, 'REV')
    if examine(members) then break end
  end
end

out[1] = examined
for why, n in pairs(tally) do
  out[2][#out[2] + 1] = why
  out[2][#out[2] + 1] = n
end
if ARGV[17] == nil or ARGV[17] == '' or #found == 0 then return out end
local start, stop = tonumber(ARGV[18]), tonumber(ARGV[19])
local recent = {}
for k = 1, #found do recent[k] = 0 end
for day in string.gmatch(ARGV[20], '[^,]+') do
  local counts = redis.call('HMGET', day, unpack(found))
  for k = 1, #found do recent[k] = recent[k] + (tonumber(counts[k]) or 0) end
end
for k = 1, #found do
  local vals, load = redis.call('HVALS', ARGV[17] .. found[k]), 0
  for i = 1, #vals do
    local s, e = string.match(vals[i], '([^,]+),([^,]+)')
    if tonumber(s) < stop and start < tonumber(e) then load = load + 1 end
  end
  out[4 * k + 1] = load
  out[4 * k + 2] = recent[k]
end
return out
"""


# Index writes in one call. ARGV: operations, each an opcode and its arguments:
# "c"/"x" org-prefix set member level: ZADD/ZREM in a cell set ("<prefix><set>"), keeping the
# org's counts per set and level ("<prefix>>", field "<set>><level>": helpers at or above it);
# "A"/"R" set member level|"" counts skill: ZADD/ZREM in an org-wide shard that also keep the
# org's skill sizes; "s" key value (SET), "d" key (DEL).
_APPLY = """
local function count(prefix, set, level, by)
  for l = 1, tonumber(level) do
    local field = set .. '>' .. l
    if redis.call('HINCRBY', prefix .. '>', field, by) <= 0 then
      redis.call('HDEL', prefix .. '>', field)
    end
  end
end
local i = 1
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'c' then
    if redis.call('ZADD', ARGV[i + 1] .. ARGV[i + 2], ARGV[i + 4], ARGV[i + 3]) == 1 then
      count(ARGV[i + 1], ARGV[i + 2], ARGV[i + 4], 1)
    end
    i = i + 5
  elseif op == 'x' then
    if redis.call('ZREM', ARGV[i + 1] .. ARGV[i + 2], ARGV[i + 3]) == 1 then
      count(ARGV[i + 1], ARGV[i + 2], ARGV[i + 4], -1)
    end
    i = i + 5
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


class Candidates(list[Candidate]):
    """What a candidate search found: the helpers that may be eligible, how many it examined,
    and why the others could not take the request (for the coordinator's explanation)."""

    def __init__(
        self,
        found: Iterable[Candidate] = (),
        *,
        examined: int | None = None,
        ruled_out: list[Check] | None = None,
    ) -> None:
        super().__init__(found)
        self.ruled_out = ruled_out or []
        self.examined = len(self) + len(self.ruled_out) if examined is None else examined


def profile_prefix(prefix: str, org: str) -> str:
    """The prefix of an org's packed profiles (then the helper's id)."""
    return f"{prefix}h:{org}:"


def sets_prefix(prefix: str, org: str) -> str:
    """The prefix of an org's sets; its skill sizes hash is this + "#", its counts per cell
    set and level this + ">"."""
    return f"{prefix}hz:{org}:"


def tier_for(radius_km: float) -> Tier:
    return next(t for t in TIERS if radius_km <= t.max_radius_km)


class HelperIndex:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._p = prefix
        # the searches of a batch's requests, made concurrently, go as one pipeline
        self._candidates = CoalescedScript(redis, _CANDIDATES)
        self._apply = redis.register_script(_APPLY)
        # Time zones seen among the helpers found for an org's requests in an area: the search
        # is told the request window in each, so that it can rule out helpers whose weekly
        # slots miss it. Per area, not per org: a pan-European org has a dozen zones, and
        # converting the window into each cost a tenth of a decision.
        self._zones: dict[tuple[str, str], set[str]] = {}

    # -- keys ------------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return self._p

    @property
    def redis(self) -> Redis:
        return self._r

    def _profile_prefix(self, org: str) -> str:
        return profile_prefix(self._p, org)

    def _sets(self, org: str) -> str:
        """The prefix of an org's sets, and of its counts per cell set and level (+ ">")."""
        return sets_prefix(self._p, org)

    def _skill_shard(self, org: str, skill: str, helper_id: str) -> str:
        """Org-wide sets are sharded so that each stays small enough for Redis's compact
        listpack encoding (five times smaller than a skiplist entry)."""
        return f"{sets_prefix(self._p, org)}{skill}:{shard_name(helper_id)}"

    def _skill_counts(self, org: str) -> str:
        return sets_prefix(self._p, org) + "#"

    @property
    def version_key(self) -> str:
        return f"{self._p}index:version"

    def _set_ops(self, h: Helper, packed: bytes, leaving: bool) -> list[tuple[Any, ...]]:
        """_APPLY's operations that file the helper in every set it belongs in (or take it
        out of them): one org-wide shard and, when located, one cell set per skill. A cell
        set's member carries the helper's radius and location (bytes 2-12 of its packed
        profile), so the search drops helpers out of reach before reading their profiles."""
        sizes = self._skill_counts(h.org)
        op, op_cell = ("R", "x") if leaving else ("A", "c")
        ops: list[tuple[Any, ...]] = [
            (op, self._skill_shard(h.org, skill, h.id), h.id, "" if leaving else lv, sizes, skill)
            for skill, lv in h.skills.items()
        ]
        if h.lat is not None and h.lon is not None:
            tier = tier_for(h.radius_km)
            cell = h3.latlng_to_cell(h.lat, h.lon, tier.resolution)
            member = h.id.encode() + packed[2:12]
            ops += [
                (op_cell, self._sets(h.org), f"{tier.name}:{cell}:{skill}", member, lv)
                for skill, lv in h.skills.items()
            ]
        return ops

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
        ops: list[tuple[Any, ...]] = []
        for (org, helper_id), old_raw, helper in zip(keys, olds, latest.values(), strict=True):
            if old_raw is not None:
                old = _raw(old_raw)
                ops += self._set_ops(unpack_helper(org, helper_id, old), old, leaving=True)
            if helper is None:
                ops.append(("d", self._profile_prefix(org) + helper_id))
                continue
            packed = pack_helper(helper)
            ops += self._set_ops(helper, packed, leaving=False)
            ops.append(("s", self._profile_prefix(org) + helper_id, packed))
        for start in range(0, len(ops), APPLY_CHUNK):
            await self._apply(
                keys=[], args=[a for op in ops[start : start + APPLY_CHUNK] for a in op]
            )

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
        self,
        request: Request,
        *,
        limit: int = MAX_CANDIDATES,
        loads: LoadQuery | None = None,
        coverage_threshold: float = 1.0,
    ) -> Candidates:
        """Helpers holding the rarest required skill at its level and roughly within their
        radius of the request, nearest cells first, `limit` of them examined (up to eight
        times more while none has passed the index's screen); those
        the index could rule out are only tallied, the rest come back with their current load
        when asked. The caller checks every hard constraint on what comes back."""
        cells, ring0, ring1 = self.search_cells(request)
        zones = self.zones_for(request)
        limits = PER_RING if request.lat is not None else (limit, limit, limit)
        start, end = request.window.start, request.window.end
        args: list[str | int | float] = [
            *limits,
            ring0,
            ring1,
            limit,
            random.getrandbits(30),
            self._profile_prefix(request.org),
            self._sets(request.org),
            ",".join(f"{name}:{level}" for name, level in request.skills.items()),
            "" if request.lat is None else request.lat,
            "" if request.lon is None else request.lon,
            ",".join(cells),
            ",".join(request.languages),
            _spans(zones, start, end),
            coverage_threshold,
        ]
        if loads is not None:
            args += [
                loads.load_prefix,
                int(start.timestamp()),
                int(end.timestamp()),
                ",".join(loads.recent_keys),
            ]
        flat = await self._candidates(keys=[], args=args)
        org = request.org
        found = Candidates(
            (
                Candidate(unpack_helper(org, _text(flat[i]), flat[i + 1]), flat[i + 2], flat[i + 3])
                for i in range(2, len(flat), 4)
            ),
            examined=flat[0],
            ruled_out=_ruled_out(flat[1]),
        )
        if found and len(zones) < MAX_ZONES:
            zones.update(c.helper.timezone for c in found)
        return found

    def zones_for(self, request: Request) -> set[str]:
        """The time zones the search screens weekly availability in, for requests of this org
        near this one (learnt from the helpers found; a zone missing here only means the
        caller checks those helpers' availability itself)."""
        area = ""
        if request.lat is not None and request.lon is not None:
            area = h3.latlng_to_cell(request.lat, request.lon, ZONE_AREA_RESOLUTION)
        return self._zones.setdefault((request.org, area), set())

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


def _spans(zones: Iterable[str], start: datetime, end: datetime) -> str:
    """The request window in each zone's local time, "zone=weekday,start,end;...", for the
    zones where it is one stretch of one local day (the others are left to the caller)."""
    parts = []
    for zone in zones:
        span = local_span(zone, start, end)
        if span is not None:
            parts.append(f"{zone}={span[0]},{span[1]!r},{span[2]!r}")
    return ";".join(parts)


def _ruled_out(tally: list[bytes]) -> list[Check]:
    """The search's tally (reason, count, ...) as the checks domain/eligibility.py makes."""
    out: list[Check] = []
    for i in range(0, len(tally), 2):
        reason, _, detail = _text(tally[i]).partition(":")
        out += [Check(Rejection(reason), detail=detail)] * int(tally[i + 1])
    return out


@lru_cache(maxsize=65_536)
def _disk(tier: str, center: str) -> tuple[tuple[str, ...], ...]:
    """A cell's rings 0..RING as "tier:cell" names. Cached: requests from one neighbourhood
    share them, and walking H3 rings was a tenth of a decision's Python time."""
    return tuple(
        tuple(f"{tier}:{cell}" for cell in h3.grid_ring(center, distance))
        for distance in range(RING + 1)
    )


_SHARD_NAMES = tuple(str(n) for n in range(ORG_SHARDS))


def shard_name(helper_id: str) -> str:
    """The org-wide shard a helper is filed in, of ORG_SHARDS."""
    return _SHARD_NAMES[zlib.crc32(helper_id.encode()) % ORG_SHARDS]


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
