"""Wire models to matching's domain types, and the packed form kept in the Redis index."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from leanon_shared.models import HelperRecord, RequestSubmission

from leanon_matching.domain.model import Helper, Interval, Request, Slot

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _hhmm(value: str) -> time:
    return time(0, 0) if value == "24:00" else time.fromisoformat(value)


def helper_from_record(record: HelperRecord) -> Helper:
    p = record.profile
    slots = tuple(
        Slot(
            weekday=DAYS.index(s.day),
            start=_hhmm(s.start),
            end=_hhmm(s.end),
            ends_next_day=s.end == "24:00" or _hhmm(s.end) <= _hhmm(s.start),
        )
        for s in p.availability.weekly
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
        weekly=slots,
        windows=tuple(Interval(w.start, w.end) for w in p.availability.windows),
        capacity=p.capacity,
    )


def pack_helper(h: Helper) -> dict[str, Any]:
    """Compact JSON-able form for the index: no contact details, ever."""
    return {
        "o": h.org,
        "i": h.id,
        "s": h.skills,
        "l": sorted(h.languages),
        "p": [h.lat, h.lon] if h.lat is not None else None,
        "r": h.radius_km,
        "z": h.timezone,
        "w": [
            [s.weekday, s.start.isoformat("minutes"), s.end.isoformat("minutes"), s.ends_next_day]
            for s in h.weekly
        ],
        "x": [[i.start.isoformat(), i.end.isoformat()] for i in h.windows],
        "c": h.capacity,
    }


def unpack_helper(raw: dict[str, Any]) -> Helper:
    pos = raw["p"]
    return Helper(
        org=raw["o"],
        id=raw["i"],
        skills=raw["s"],
        languages=frozenset(raw["l"]),
        lat=pos[0] if pos else None,
        lon=pos[1] if pos else None,
        radius_km=raw["r"],
        timezone=raw["z"],
        weekly=tuple(
            Slot(w[0], time.fromisoformat(w[1]), time.fromisoformat(w[2]), w[3]) for w in raw["w"]
        ),
        windows=tuple(
            Interval(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in raw["x"]
        ),
        capacity=raw["c"],
    )


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
