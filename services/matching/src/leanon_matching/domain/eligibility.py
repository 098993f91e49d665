"""The hard constraints: which helpers may be offered a request, and why the others may not."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from leanon_matching.domain.availability import coverage
from leanon_matching.domain.geo import haversine_km
from leanon_matching.domain.model import Helper, Request

COVERAGE_EPSILON = 1e-9


class Rejection(StrEnum):
    """Why a helper was not eligible, in the order the constraints are checked."""

    OTHER_ORG = "other_org"
    ALREADY_ASKED = "already_asked"
    SKILL = "skill"
    LANGUAGE = "language"
    DISTANCE = "distance"
    AVAILABILITY = "availability"
    CAPACITY = "capacity"


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome for one helper: eligible, or the first constraint it failed."""

    rejection: Rejection | None
    distance_km: float | None = None
    coverage: float = 0.0
    detail: str = ""


def check(
    helper: Helper,
    request: Request,
    *,
    asked: frozenset[str] = frozenset(),
    coverage_threshold: float = 1.0,
) -> Check:
    """Every hard constraint except capacity, which is decided atomically at reservation."""
    if helper.org != request.org:
        return Check(Rejection.OTHER_ORG)
    if helper.id in asked:
        return Check(Rejection.ALREADY_ASKED)
    for skill, level in request.skills.items():
        if helper.skills.get(skill, 0) < level:
            return Check(Rejection.SKILL, detail=skill)
    if request.languages and request.languages.isdisjoint(helper.languages):
        return Check(Rejection.LANGUAGE)
    distance = None
    if request.lat is not None and request.lon is not None:
        if helper.lat is None or helper.lon is None:
            return Check(Rejection.DISTANCE)
        distance = haversine_km(helper.lat, helper.lon, request.lat, request.lon)
        if distance > helper.radius_km:
            return Check(Rejection.DISTANCE, distance_km=distance)
    covered = coverage(helper.weekly, helper.windows, helper.timezone, request.window)
    if covered + COVERAGE_EPSILON < coverage_threshold:
        return Check(Rejection.AVAILABILITY, distance_km=distance, coverage=covered)
    return Check(None, distance_km=distance, coverage=covered)


def explain(request: Request, rejections: Iterable[Check], examined: int) -> str:
    """A reason a coordinator can act on, naming which constraint eliminated how many."""
    counts: dict[str, int] = {}
    for rejected in rejections:
        if rejected.rejection is None:
            continue
        key = rejected.rejection.value
        if rejected.rejection is Rejection.SKILL:
            key = f"skill:{rejected.detail}"
        counts[key] = counts.get(key, 0) + 1
    skills = ", ".join(f"{s} (level {lvl}+)" for s, lvl in sorted(request.skills.items()))
    where = "remote" if not request.has_location else "near the request location"
    when = f"{request.window.start:%a %Y-%m-%d %H:%M}-{request.window.end:%H:%M} UTC"
    if examined == 0:
        return f"no helper with {skills} {where} is registered in this org"
    labels = {
        "already_asked": "were already asked",
        "language": "share no requested language",
        "distance": "are out of their travel radius",
        "availability": f"are not available {when}",
        "capacity": "are fully booked at that time",
    }
    parts = []
    for key, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        if key.startswith("skill:"):
            parts.append(f"{n} lack skill {key[6:]} at level {request.skills[key[6:]]}+")
        else:
            parts.append(f"{n} {labels.get(key, key)}")
    return (
        f"no eligible helper for {skills} {where}, {when}: of {examined} candidates, "
        + "; ".join(parts)
    )
