"""A seeded synthetic workload: helpers clustered around European cities, and requests near them."""

from __future__ import annotations

import contextlib
import gc
import math
import random
from bisect import bisect
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from itertools import accumulate
from typing import Any
from zoneinfo import ZoneInfo

# (lat, lon, IANA zone, local language), the first `cities` are used.
CITIES: list[tuple[float, float, str, str]] = [
    (52.520, 13.405, "Europe/Berlin", "de"),
    (48.857, 2.352, "Europe/Paris", "fr"),
    (51.507, -0.128, "Europe/London", "en"),
    (40.417, -3.704, "Europe/Madrid", "es"),
    (41.903, 12.496, "Europe/Rome", "it"),
    (48.208, 16.373, "Europe/Vienna", "de"),
    (52.370, 4.895, "Europe/Amsterdam", "nl"),
    (50.850, 4.352, "Europe/Brussels", "fr"),
    (59.329, 18.069, "Europe/Stockholm", "sv"),
    (55.676, 12.568, "Europe/Copenhagen", "da"),
    (52.230, 21.012, "Europe/Warsaw", "pl"),
    (50.075, 14.438, "Europe/Prague", "cs"),
    (47.498, 19.040, "Europe/Budapest", "hu"),
    (38.722, -9.139, "Europe/Lisbon", "pt"),
    (53.349, -6.260, "Europe/Dublin", "en"),
    (60.170, 24.938, "Europe/Helsinki", "fi"),
    (45.464, 9.190, "Europe/Rome", "it"),
    (53.551, 9.994, "Europe/Berlin", "de"),
    (48.135, 11.582, "Europe/Berlin", "de"),
    (45.764, 4.836, "Europe/Paris", "fr"),
]
# Zipf-like popularity: a few common skills, a tail of rare ones.
SKILLS = [
    "shopping",
    "driving",
    "first_aid",
    "translation",
    "childcare",
    "elder_care",
    "cooking",
    "it_support",
    "carpentry",
    "plumbing",
    "counselling",
    "sign_language",
]
SKILL_CUM = list(accumulate(1 / (i + 1) for i in range(len(SKILLS))))
# Second languages and those of newcomers: English first, then a tail.
OTHER_LANGUAGES = ["en", "en", "en", "de", "fr", "es", "ar", "tr", "uk", "pl", "ru", "pt"]
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RADII_KM = [5, 10, 10, 15, 15, 25, 50]
URGENCY = ["low", "normal", "normal", "normal", "high", "critical"]
KM_PER_DEG_LAT = 111.2
SPREAD_KM = 10.0
# A week from a fixed Monday, so every run asks for the same hours.
ANCHOR = datetime(2026, 12, 7, tzinfo=UTC)

Weekly = list[tuple[str, str, str]]


def _hm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _slots(days: list[str], start_h: int, end_h: int) -> Weekly:
    """Slots on the days, end hour may be past 24 (crosses midnight) or exactly 24."""
    end = end_h * 60 if end_h <= 24 else (end_h - 24) * 60
    return [(d, _hm(start_h * 60), "24:00" if end == 1440 else _hm(end)) for d in days]


def _weekly_patterns() -> list[tuple[float, list[Weekly]]]:
    """Typical weekly availability, each with a weight and some variants."""
    weekdays, weekend = DAYS[:5], DAYS[5:]
    return [
        # weekday evenings, after work
        (30, [_slots(weekdays, s, s + d) for s in (17, 18, 19) for d in (3, 4)]),
        # weekends, daytime
        (20, [_slots(weekend, s, e) for s in (8, 9, 10) for e in (16, 18, 20)]),
        # weekday daytime (students, retired people)
        (15, [_slots(weekdays, s, e) for s in (8, 9, 10) for e in (14, 16, 17)]),
        # weekday mornings and weekend afternoons
        (10, [_slots(weekdays, 7, 12) + _slots(weekend, 12, 18)]),
        # Friday and Saturday nights, crossing midnight
        (10, [_slots(DAYS[4:6], s, e) for s in (20, 21, 22) for e in (25, 26)]),
        # night shifts, crossing midnight
        (5, [_slots(DAYS[i : i + 3], 22, 30) for i in range(5)]),
        # any time
        (10, [_slots(DAYS, 0, 24)]),
    ]


PATTERNS = _weekly_patterns()
PATTERN_CUM = list(accumulate(w for w, _ in PATTERNS))


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Millions of small acyclic containers: the cyclic collector would only slow us down."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check(cities: int) -> None:
    if not 1 <= cities <= len(CITIES):
        raise ValueError(f"cities must be 1..{len(CITIES)}")


def _spread(lat: float, km: float = SPREAD_KM) -> tuple[float, float]:
    """Degrees of latitude and longitude for `km` at this latitude."""
    return km / KM_PER_DEG_LAT, km / (KM_PER_DEG_LAT * math.cos(math.radians(lat)))


def make_helpers(n: int, seed: int, cities: int = len(CITIES)) -> list[dict[str, Any]]:
    """`n` helpers around the first `cities` cities; the same list for the same seed."""
    _check(cities)
    rng = random.Random(seed)
    r, gauss = rng.random, rng.gauss  # index arithmetic on random() is several times faster
    skill_total, pattern_total = SKILL_CUM[-1], PATTERN_CUM[-1]
    n_other, n_radii = len(OTHER_LANGUAGES), len(RADII_KM)
    spreads = [_spread(lat) for lat, _, _, _ in CITIES]
    out: list[dict[str, Any]] = []
    with _no_gc():
        for i in range(n):
            c = int(r() * cities)
            lat, lon, zone, local = CITIES[c]
            dlat, dlon = spreads[c]
            skills = {
                SKILLS[bisect(SKILL_CUM, r() * skill_total)]: 1 + int(r() * 5)
                for _ in range(1 + int(r() * 3))
            }
            languages = [local] if r() < 0.85 else [OTHER_LANGUAGES[int(r() * n_other)]]
            if r() < 0.4:
                second = OTHER_LANGUAGES[int(r() * n_other)]
                if second not in languages:
                    languages.append(second)
            variants = PATTERNS[bisect(PATTERN_CUM, r() * pattern_total)][1]
            weekly = variants[int(r() * len(variants))]
            out.append(
                {
                    "org": "bench",
                    "id": f"h{i:07d}",
                    "skills": dict(sorted(skills.items())),
                    "languages": sorted(languages),
                    "lat": lat + gauss(0, dlat),
                    "lon": lon + gauss(0, dlon),
                    "radius_km": RADII_KM[int(r() * n_radii)],
                    "timezone": zone,
                    "weekly": [{"day": d, "start": s, "end": e} for d, s, e in weekly],
                    "capacity": 1 + int(r() * 3),
                }
            )
    return out


def make_requests(
    n: int, seed: int, cities: int = len(CITIES), *, now: datetime = ANCHOR
) -> list[dict[str, Any]]:
    """`n` requests near the same cities, each for 1-3 hours at a daytime local hour within
    the 7 days from `now` (a fixed Monday by default), never crossing local midnight."""
    _check(cities)
    rng = random.Random(seed)
    randint, choices, choice, gauss = rng.randint, rng.choices, rng.choice, rng.gauss
    zones: dict[str, ZoneInfo] = {}
    out: list[dict[str, Any]] = []
    for i in range(n):
        lat, lon, zone, local = CITIES[int(rng.random() * cities)]
        tz = zones.setdefault(zone, ZoneInfo(zone))
        dlat, dlon = _spread(lat, SPREAD_KM * 0.7)  # needs are a little more central
        rlat, rlon = lat + gauss(0, dlat), lon + gauss(0, dlon)
        day: date = now.astimezone(tz).date() + timedelta(days=randint(0, 6))
        hour = choices(range(8, 21), weights=[3, 4, 5, 5, 4, 4, 4, 4, 5, 6, 6, 5, 3])[0]
        start = datetime.combine(day, time(hour, choice((0, 15, 30, 45))), tzinfo=tz)
        start_utc = start.astimezone(UTC)
        skills = choices(SKILLS, cum_weights=SKILL_CUM, k=choice((1, 1, 1, 2)))
        roll = rng.random()
        languages = [] if roll < 0.8 else [local] if roll < 0.92 else [choice(OTHER_LANGUAGES)]
        out.append(
            {
                "org": "bench",
                "id": f"r{i:07d}",
                "skills": {s: randint(1, 4) for s in sorted(set(skills))},
                "languages": languages,
                "lat": rlat,
                "lon": rlon,
                "window_start": start_utc,
                "window_end": start_utc + timedelta(hours=randint(1, 3)),
                "urgency": choice(URGENCY),
            }
        )
    return out
