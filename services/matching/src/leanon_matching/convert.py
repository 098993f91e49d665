"""Wire models to matching's domain types, and the packed form kept in the Redis index."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from leanon_matching.domain.model import Helper, Interval, Request, Slot
from leanon_shared.models import HelperRecord, RequestSubmission

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY = {day: i for i, day in enumerate(DAYS)}


def _hhmm(value: str) -> int:
    """Minutes from midnight; "24:00" is 1440."""
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def helper_from_json(raw: dict[str, Any]) -> Helper:
    """From a helpers-topic record as JSON, without re-validating it (intake already did):
    the index rebuild reads a million of these."""
    p = raw["profile"]
    avail = p.get("availability") or {}
    loc = p.get("location")
    slots = tuple(
        Slot(DAYS.index(s["day"]), _hhmm(s["start"]), _hhmm(s["end"]))
        for s in avail.get("weekly", ())
    )
    return Helper(
        org=raw["org"],
        id=raw["helper_id"],
        skills=dict(p["skills"]),
        languages=frozenset(p.get("languages", ())),
        lat=loc["lat"] if loc else None,
        lon=loc["lon"] if loc else None,
        radius_km=float(p.get("radius_km", 10)),
        timezone=avail.get("timezone", "UTC"),
        weekly=tuple(slots),
        windows=tuple(
            Interval(datetime.fromisoformat(w["start"]), datetime.fromisoformat(w["end"]))
            for w in avail.get("windows", ())
        ),
        capacity=int(p.get("capacity", 1)),
    )


def helper_from_record(record: HelperRecord) -> Helper:
    p = record.profile
    slots = tuple(
        Slot(DAYS.index(s.day), _hhmm(s.start), _hhmm(s.end)) for s in p.availability.weekly
    )
    return Helper(
        org=record.org,
        id=record.helper_id,
        skills=dict(p.skills),
        languages=frozenset(p.languages),
        lat=p.location.lat if p.location else None,
        lon=p.location.lon if p.location else None,
        radius_km=p.radius_km,
        timezone=p.availability.timezone,
        weekly=tuple(slots),
        windows=tuple(Interval(w.start, w.end) for w in p.availability.windows),
        capacity=p.capacity,
    )


_HEAD = struct.Struct("<BBHff")  # format version, capacity, radius in 0.1 km, lat, lon (NaN: none)
_SLOT = struct.Struct("<BHH")  # weekday, start minute, end minute
_WINDOW = struct.Struct("<II")  # epoch seconds
PACK_VERSION = 1


def pack_helper(h: Helper) -> bytes:
    """About 90 bytes a helper: what matching needs, never a contact detail."""
    out = bytearray(
        _HEAD.pack(
            PACK_VERSION,
            h.capacity,
            round(h.radius_km * 10),
            h.lat if h.lat is not None else math.nan,
            h.lon if h.lon is not None else math.nan,
        )
    )
    zone = h.timezone.encode()
    out += bytes([len(zone)]) + zone
    out.append(len(h.skills))
    for name, level in h.skills.items():
        raw = name.encode()
        out += bytes([len(raw)]) + raw + bytes([level])
    langs = sorted(h.languages)
    out.append(len(langs))
    for lang in langs:
        out += lang.encode()
    out.append(len(h.weekly))
    for slot in h.weekly:
        out += _SLOT.pack(slot.weekday, slot.start, slot.end)
    out.append(len(h.windows))
    for w in h.windows:
        out += _WINDOW.pack(int(w.start.timestamp()), int(w.end.timestamp()))
    return bytes(out)


class Packed(NamedTuple):
    """A helpers-topic record ready for a bulk index load: what the sets need, and the packed
    profile; the record itself for the rare helper that must go through a full update."""

    record: dict[str, Any]
    packed: bytes
    skills: dict[str, int]
    lat: float | None
    lon: float | None
    radius_km: float


def packed_from_json(record: dict[str, Any]) -> Packed:
    p = record["profile"]
    loc = p.get("location")
    return Packed(
        record,
        pack_json(p),
        p["skills"],
        loc["lat"] if loc else None,
        loc["lon"] if loc else None,
        float(p.get("radius_km", 10)),
    )


def pack_json(profile: dict[str, Any]) -> bytes:
    """pack_helper(helper_from_json(...)) straight from a helpers-topic profile, byte for byte,
    without building a Helper: the rebuild packs a million of these. Everything after the
    header is packed once per distinct value (helpers share zones, skill sets, languages and
    weekly hours), which made packing four times cheaper."""
    avail = profile.get("availability") or {}
    loc = profile.get("location")
    weekly = avail.get("weekly", ())
    windows = avail.get("windows", ())
    return b"".join(
        (
            _HEAD.pack(
                PACK_VERSION,
                int(profile.get("capacity", 1)),
                round(float(profile.get("radius_km", 10)) * 10),
                loc["lat"] if loc else math.nan,
                loc["lon"] if loc else math.nan,
            ),
            _packed_zone(avail.get("timezone", "UTC")),
            _packed_skills(tuple(profile["skills"].items())),
            _packed_languages(tuple(profile.get("languages", ()))),
            _packed_weekly(tuple((s["day"], s["start"], s["end"]) for s in weekly)),
            _packed_windows(tuple((w["start"], w["end"]) for w in windows)) if windows else b"\0",
        )
    )


@lru_cache(maxsize=1024)
def _packed_zone(zone: str) -> bytes:
    raw = zone.encode()
    return bytes([len(raw)]) + raw


@lru_cache(maxsize=65_536)
def _packed_skills(skills: tuple[tuple[str, int], ...]) -> bytes:
    out = bytearray([len(skills)])
    for name, level in skills:
        raw = name.encode()
        out += bytes([len(raw)]) + raw + bytes([level])
    return bytes(out)


@lru_cache(maxsize=4096)
def _packed_languages(languages: tuple[str, ...]) -> bytes:
    langs = sorted(set(languages))
    return bytes([len(langs)]) + b"".join(lang.encode() for lang in langs)


@lru_cache(maxsize=16_384)
def _packed_weekly(weekly: tuple[tuple[str, str, str], ...]) -> bytes:
    out = bytearray([len(weekly)])
    for day, start, end in weekly:
        out += _SLOT.pack(_DAY[day], _hhmm(start), _hhmm(end))
    return bytes(out)


def _packed_windows(windows: tuple[tuple[str, str], ...]) -> bytes:
    out = bytearray([len(windows)])
    for start, end in windows:
        out += _WINDOW.pack(
            int(datetime.fromisoformat(start).timestamp()),
            int(datetime.fromisoformat(end).timestamp()),
        )
    return bytes(out)


def unpack_helper(org: str, helper_id: str, raw: bytes) -> Helper:
    """Decode a packed profile.

    Not cached as a whole: at a million helpers a request's 64 candidates were mostly cache
    misses (about 1 in 6 hits), and every cached profile is eight long-lived objects for the
    cyclic collector, whose young generation then filled every ~100 requests and paused for
    20-40 ms, which was the whole p99. Only the immutable tail (languages, weekly slots,
    windows), which many helpers share, is cached; the rest dies with its request.
    """
    version, capacity, radius, lat, lon = _HEAD.unpack_from(raw, 0)
    if version != PACK_VERSION:
        raise ValueError(f"packed helper format {version} is not {PACK_VERSION}")
    pos = _HEAD.size
    n = raw[pos]
    zone = raw[pos + 1 : pos + 1 + n].decode()
    pos += 1 + n
    skills: dict[str, int] = {}
    for _ in range(raw[(pos := pos + 1) - 1]):
        n = raw[pos]
        skills[raw[pos + 1 : pos + 1 + n].decode()] = raw[pos + 1 + n]
        pos += 2 + n
    languages, slots, windows = _unpack_tail(raw[pos:])
    located = not math.isnan(lat)
    return Helper(
        org=org,
        id=helper_id,
        skills=skills,
        languages=languages,
        lat=lat if located else None,
        lon=lon if located else None,
        radius_km=radius / 10,
        timezone=zone,
        weekly=slots,
        windows=windows,
        capacity=capacity,
    )


@lru_cache(maxsize=16_384)
def _unpack_tail(raw: bytes) -> tuple[frozenset[str], tuple[Slot, ...], tuple[Interval, ...]]:
    """Languages, weekly slots and one-off windows: the costliest part to decode, and the same
    bytes for every helper with the same languages and hours."""
    count = raw[0]
    pos = 1
    languages = frozenset(raw[pos + 2 * i : pos + 2 * i + 2].decode() for i in range(count))
    pos += 2 * count
    slots = []
    for _ in range(raw[(pos := pos + 1) - 1]):
        day, start, end = _SLOT.unpack_from(raw, pos)
        pos += _SLOT.size
        slots.append(Slot(day, start, end))
    windows = []
    for _ in range(raw[(pos := pos + 1) - 1]):
        a, b = _WINDOW.unpack_from(raw, pos)
        pos += _WINDOW.size
        windows.append(Interval(datetime.fromtimestamp(a, UTC), datetime.fromtimestamp(b, UTC)))
    return languages, tuple(slots), tuple(windows)


def request_from_submission(
    org: str, request_id: str, region: str, sub: RequestSubmission
) -> Request:
    return Request(
        org=org,
        id=request_id,
        skills=dict(sub.skills),
        languages=frozenset(sub.languages),
        lat=sub.location.lat if sub.location else None,
        lon=sub.location.lon if sub.location else None,
        window=Interval(sub.window.start, sub.window.end),
        urgency=sub.urgency,
        helpers_needed=sub.helpers_needed,
        expires_at=sub.effective_expiry,
        description=sub.description,
        region=region,
    )
