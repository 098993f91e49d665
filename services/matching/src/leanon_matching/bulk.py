"""Building the helper index in bulk, for a rebuild into a Redis that holds none of it.

Filling the sets with ZADD made the rebuild Redis-bound: a set small enough for Redis's compact
listpack encoding is a flat array, so each ZADD scans it for the member and for the place to
put it, and filling a set of n members costs n²/2 steps. At a million helpers that was 22 of
Redis's 35 µs per helper. So the builder keeps the latest version of every helper in memory,
writes profiles as it goes, and at the end writes each set once, whole: it encodes the set as
the listpack Redis itself would have built, wraps it as a DUMP payload, and sends RESTORE,
which Redis copies in without looking at a member.

The builder is plain data and needs no connection: a rebuild runs several of them in planner
processes, each reading the partitions it owns (a helper's records all sit in one
partition), then has them exchange the sets' entries so that each encodes a share of the
keys (see rebuild.py).
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anycrc
import h3
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from leanon_matching.convert import pack_json
from leanon_matching.index import profile_prefix, sets_prefix, shard_name, tier_for

log = logging.getLogger(__name__)

# A set, named as (org, place, skill): place is an org-wide shard's number or "tier:cell".
SetName = tuple[str, str, str]
# Its members by level (index 1-5), each with its listpack entries, member and score.
Levels = tuple[dict[bytes, bytes], ...]
Entries = dict[SetName, Levels]
WRITES_PER_COMMAND = 1000  # keys per MSET or DEL, fields per HSET: a millisecond of Redis each


@dataclass(frozen=True, slots=True)
class Commands:
    """Redis commands encoded for the wire (RESP), and how many replies they will get."""

    wire: bytes
    count: int


class IndexBuilder:
    """The index of the helpers it was given, built for an empty Redis under `prefix`.

    Sets are kept as Redis will hold them: per set and level, each member with its listpack
    entry (member and score) encoded once, as the helper is planned. At the end a set is its
    levels' entries in order, each level's sorted by member: the order of Redis's own."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._sets: Entries = {}
        # Per helper, where it is filed: shard, cell set ("" when remote), skills, its id and
        # its cell-set member (id, radius, location), both as bytes.
        self._filed: dict[
            tuple[str, str], tuple[str, str, tuple[tuple[str, int], ...], bytes, bytes]
        ] = {}
        self._names: dict[Any, Any] = {}  # one object per distinct name or skill set

    def plan(
        self,
        changes: Iterable[tuple[str, str, dict[str, Any] | None]],
        unreadable: Callable[[str, str, Exception], object],
    ) -> Commands:
        """Take helpers-topic records in order (JSON; None for a removal), and return the
        profile writes they make (MSET, DEL). A record whose profile cannot be packed is
        skipped, and passed to `unreadable`: the helper's previous version stands."""
        latest: dict[tuple[str, str], bytes | None] = {}
        for org, helper_id, record in changes:
            try:
                latest[(org, helper_id)] = self._file(org, helper_id, record)
            except (KeyError, TypeError, ValueError, AttributeError, struct.error) as exc:
                unreadable(org, helper_id, exc)
        sets: list[bytes] = []
        gone: list[bytes] = []
        for (org, helper_id), packed in latest.items():
            key = _bulk((profile_prefix(self.prefix, org) + helper_id).encode())
            if packed is None:
                gone.append(key)
            else:
                sets.append(key + _bulk(packed))
        wire = _Wire()
        wire.chunked(b"MSET", (), sets, 2)
        wire.chunked(b"DEL", (), gone, 1)
        return wire.done()

    def _file(self, org: str, helper_id: str, record: dict[str, Any] | None) -> bytes | None:
        """File the helper's latest version (None: removed), all checks first."""
        filed = packed = None
        if record is not None:
            profile = record["profile"]
            packed = pack_json(profile)
            names = self._names
            skills = tuple(
                (names.setdefault(n, n), _level(v)) for n, v in profile["skills"].items()
            )
            raw_id = helper_id.encode()
            cell, member = "", b""
            if loc := profile.get("location"):
                tier = tier_for(float(profile.get("radius_km", 10)))
                at = f"{tier.name}:{h3.latlng_to_cell(loc['lat'], loc['lon'], tier.resolution)}"
                cell = names.setdefault(at, at)
                member = raw_id + packed[2:12]  # in cell sets: radius, lat, lon
            filed = (shard_name(helper_id), cell, names.setdefault(skills, skills), raw_id, member)
        old = self._filed.pop((org, helper_id), None)
        if old is not None:
            self._sort(org, *old, into=False)
        if filed is not None:
            self._filed[(org, helper_id)] = filed
            self._sort(org, *filed, into=True)
        return packed

    def _sort(
        self,
        org: str,
        shard: str,
        cell: str,
        skills: tuple[tuple[str, int], ...],
        raw_id: bytes,
        member: bytes,
        *,
        into: bool,
    ) -> None:
        """Put a helper into its sets, or take it out."""
        filings = [(shard, raw_id)]
        if cell:
            filings.append((cell, member))
        for place, value in filings:
            entry = _lp_string(value) if into else b""
            for skill, level in skills:
                levels = self._sets.get((org, place, skill))
                if levels is None:
                    levels = self._sets[(org, place, skill)] = ({}, {}, {}, {}, {}, {})
                if into:
                    levels[level][value] = entry + _LP_SMALL_INT[level]
                else:
                    del levels[level][value]

    def entries(self, parts: int) -> list[Entries]:
        """The sets, split into `parts` by name (the same split in every process), so that
        the sets of several builders can be merged and encoded in parallel."""
        out: list[Entries] = [{} for _ in range(parts)]
        for name, levels in self._sets.items():
            out[zlib.crc32("/".join(name).encode()) % parts][name] = levels
        return out


def set_writes(prefix: str, parts: Iterable[Entries]) -> Commands:
    """RESTORE for every set of the parts (a set's members may be spread over several),
    then the org's counts per cell set and level (HSET) and sizes per skill (HINCRBY: other
    processes add theirs)."""
    merged: dict[SetName, list[Levels]] = defaultdict(list)
    for part in parts:
        for name, levels in part.items():
            merged[name].append(levels)
    wire = _Wire()
    counts: dict[str, list[bytes]] = defaultdict(list)
    sizes: dict[tuple[str, str], int] = defaultdict(int)
    for (org, place, skill), spread in merged.items():
        body: list[bytes] = []
        at = [0] * 7
        for level in range(1, 6):
            entries = spread[0][level]
            if len(spread) > 1:
                entries = {m: e for levels in spread for m, e in levels[level].items()}
            at[level] = len(entries)
            body += [entries[m] for m in sorted(entries)]
        members = sum(at)
        if not members:
            continue
        sets = sets_prefix(prefix, org)
        if ":" in place:  # a cell set
            key = f"{sets}{place}:{skill}"
            for level in range(5, 0, -1):
                at[level] += at[level + 1]
                if at[level]:
                    field = f"{place}:{skill}>{level}".encode()
                    counts[sets].append(_bulk(field) + _bulk(b"%d" % at[level]))
        else:
            key = f"{sets}{skill}:{place}"
            sizes[(sets, skill)] += members
        payload = _dump_payload(b"".join(body), members)
        wire.command(b"RESTORE", _bulk(key.encode()), _ZERO, _bulk(payload), _REPLACE)
    for sets, fields in counts.items():
        wire.chunked(b"HSET", (_bulk(f"{sets}>".encode()),), fields, 2)
    for (sets, skill), n in sizes.items():
        field = _bulk(skill.encode())
        wire.command(b"HINCRBY", _bulk(f"{sets}#".encode()), field, _bulk(b"%d" % n))
    return wire.done()


async def send(redis: Redis, commands: Commands) -> None:
    """Send encoded commands on one pooled connection, and read every reply; an error reply
    raises (redis.ResponseError) once the others have been read."""
    pool = redis.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(commands.wire)
        failed: Exception | None = None
        for _ in range(commands.count):
            try:
                await conn.read_response()
            except ResponseError as exc:  # the rest of the replies are still on the way
                failed = failed or exc
        if failed is not None:
            raise failed
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)


# -- Redis's encodings -----------------------------------------------------------------------
# DUMP's format: the value's type, the value as an RDB string, the RDB version, and a CRC-64
# of the rest. Type 17 is a sorted set as a listpack (Redis 7.0, RDB version 10; later
# versions read it too).
_RDB_ZSET_LISTPACK = 17
_RDB_VERSION = b"\x0a\x00"
_CRC64 = anycrc.Model("CRC64-REDIS")
_ZERO, _REPLACE = b"$1\r\n0\r\n", b"$7\r\nREPLACE\r\n"


def _dump_payload(body: bytes, members: int) -> bytes:
    """A sorted set as DUMP gives it, from its listpack entries (member, score, ...) in order."""
    count = min(2 * members, 65535)  # 65535: "count them" (listpack.c)
    listpack = struct.pack("<IH", 6 + len(body) + 1, count) + body + b"\xff"
    payload = bytes([_RDB_ZSET_LISTPACK]) + _rdb_length(len(listpack)) + listpack + _RDB_VERSION
    crc: int = _CRC64.calc(payload)
    return payload + crc.to_bytes(8, "little")


def _lp_string(value: bytes) -> bytes:
    """A listpack entry as lpInsert makes it: an integer when the string is one in canonical
    form, else the string; then the entry's length backwards."""
    if value[:1].isdigit() or value[:1] == b"-":
        as_int = _lp_int(value)
        if as_int is not None:
            return as_int
    n = len(value)
    if n < 64:
        head = bytes([0x80 | n])
    elif n < 4096:
        head = bytes([0xE0 | n >> 8, n & 0xFF])
    else:
        head = b"\xf0" + struct.pack("<I", n)
    return head + value + _backlen(len(head) + n)


def _lp_int(value: bytes) -> bytes | None:
    try:
        v = int(value)
    except ValueError:
        return None
    if b"%d" % v != value or not -(2**63) <= v < 2**63:  # leading zeros, "+", "_", spaces
        return None
    if 0 <= v <= 127:
        entry = bytes([v])
    elif -4096 <= v <= 4095:
        v &= 0x1FFF
        entry = bytes([0xC0 | v >> 8, v & 0xFF])
    else:
        for code, size in ((0xF1, 2), (0xF2, 3), (0xF3, 4), (0xF4, 8)):
            if -(1 << (8 * size - 1)) <= v < 1 << (8 * size - 1):
                entry = bytes([code]) + v.to_bytes(size, "little", signed=True)
                break
    return entry + _backlen(len(entry))


def _backlen(n: int) -> bytes:
    """An entry's length, to be read from its end: seven bits a byte, the lowest last; every
    byte but the first has its top bit set (lpEncodeBacklen)."""
    out = [n & 127]
    n >>= 7
    while n:
        out[-1] |= 128
        out.append(n & 127)
        n >>= 7
    return bytes(reversed(out))


_LP_SMALL_INT = {level: bytes([level, 1]) for level in range(128)}


def _rdb_length(n: int) -> bytes:
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | n >> 8, n & 0xFF])
    if n < 2**32:
        return b"\x80" + n.to_bytes(4, "big")
    return b"\x81" + n.to_bytes(8, "big")


def _level(level: Any) -> int:
    if type(level) is not int or not 1 <= level <= 5:
        raise ValueError(f"skill level {level!r} is not 1-5")
    return level


# -- RESP ------------------------------------------------------------------------------------
def _bulk(value: bytes) -> bytes:
    """One argument of a command in Redis's wire protocol."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


class _Wire:
    """Commands being encoded for the wire; arguments come encoded (_bulk)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._count = 0

    def command(self, name: bytes, *args: bytes, argc: int | None = None) -> None:
        """One command; `argc` when an argument given here holds several (key and value)."""
        self._parts.append(b"*%d\r\n" % (1 + (len(args) if argc is None else argc)) + _bulk(name))
        self._parts += args
        self._count += 1

    def chunked(
        self, name: bytes, head: tuple[bytes, ...], items: list[bytes], values: int
    ) -> None:
        """One command per WRITES_PER_COMMAND items (each of `values` arguments), after head."""
        for first in range(0, len(items), WRITES_PER_COMMAND):
            part = items[first : first + WRITES_PER_COMMAND]
            self.command(name, *head, *part, argc=len(head) + values * len(part))

    def done(self) -> Commands:
        return Commands(b"".join(self._parts), self._count)
