"""A seeded synthetic workload: helpers clustered around twenty European cities, and requests."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

CITIES = [
    (52.52, 13.405, "Europe/Berlin"),
    (48.857, 2.352, "Europe/Paris"),
    (51.507, -0.128, "Europe/London"),
    (40.417, -3.704, "Europe/Madrid"),
    (41.903, 12.496, "Europe/Rome"),
    (48.208, 16.373, "Europe/Vienna"),
    (52.370, 4.895, "Europe/Amsterdam"),
    (50.850, 4.352, "Europe/Brussels"),
    (59.329, 18.069, "Europe/Stockholm"),
    (55.676, 12.568, "Europe/Copenhagen"),
    (52.230, 21.012, "Europe/Warsaw"),
    (50.075, 14.438, "Europe/Prague"),
    (47.498, 19.040, "Europe/Budapest"),
    (38.722, -9.139, "Europe/Lisbon"),
    (53.349, -6.260, "Europe/Dublin"),
    (60.170, 24.938, "Europe/Helsinki"),
    (45.464, 9.190, "Europe/Rome"),
    (53.551, 9.994, "Europe/Berlin"),
    (48.135, 11.582, "Europe/Berlin"),
    (45.764, 4.836, "Europe/Paris"),
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
SKILL_WEIGHTS = [1 / (i + 1) for i in range(len(SKILLS))]
LANGUAGES = ["en", "de", "fr", "es", "it", "pl", "nl", "sv", "pt", "ar", "tr", "uk"]
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
PATTERNS: list[list[tuple[list[str], str, str]]] = [
    [(DAYS[:5], "17:00", "22:00")],  # weekday evenings
    [(DAYS[5:], "08:00", "20:00")],  # weekends
    [(DAYS, "09:00", "17:00")],  # daytime, every day
    [(DAYS[:5], "07:00", "12:00"), (DAYS[5:], "10:00", "18:00")],
    [(DAYS[4:6], "20:00", "02:00")],  # Friday and Saturday nights
    [(DAYS, "00:00", "24:00")],  # any time
]


def make_helpers(n: int, seed: int, cities: int = len(CITIES)) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lat, lon, zone = CITIES[rng.randrange(cities)]
        chosen = set(rng.choices(SKILLS, SKILL_WEIGHTS, k=rng.randint(1, 3)))
        weekly = [
            {"day": d, "start": s, "end": e} for days, s, e in rng.choice(PATTERNS) for d in days
        ]
        out.append(
            {
                "org": "bench",
                "id": f"h{i:07d}",
                "skills": {s: rng.randint(1, 5) for s in sorted(chosen)},
                "languages": sorted(set(rng.choices(LANGUAGES, k=rng.randint(1, 2)))),
                "lat": lat + rng.gauss(0, 0.09),  # ~10 km spread
                "lon": lon + rng.gauss(0, 0.14),
                "radius_km": rng.choice([5, 10, 10, 15, 25, 50]),
                "timezone": zone,
                "weekly": weekly,
                "capacity": rng.randint(1, 3),
            }
        )
    return out


def make_requests(n: int, seed: int, cities: int = len(CITIES)) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    today = datetime(2026, 12, 7, tzinfo=UTC)  # fixed, so every run asks for the same hours
    out = []
    for i in range(n):
        lat, lon, _zone = CITIES[rng.randrange(cities)]
        start = today + timedelta(days=rng.randint(0, 6), hours=rng.randint(7, 19))
        skills = set(rng.choices(SKILLS, SKILL_WEIGHTS, k=rng.choice([1, 1, 1, 2])))
        out.append(
            {
                "org": "bench",
                "id": f"r{i:07d}",
                "skills": {s: rng.randint(1, 4) for s in sorted(skills)},
                "languages": [rng.choice(LANGUAGES)] if rng.random() < 0.2 else [],
                "lat": lat + rng.gauss(0, 0.06),
                "lon": lon + rng.gauss(0, 0.09),
                "window_start": start,
                "window_end": start + timedelta(hours=rng.randint(1, 3)),
                "urgency": rng.choice(["low", "normal", "normal", "high", "critical"]),
            }
        )
    return out
