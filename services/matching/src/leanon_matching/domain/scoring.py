"""The score of a helper for a request, in [0, 1], with the breakdown kept on every offer."""

from __future__ import annotations

from math import exp

from leanon_matching.domain.model import Helper, Request, Scored, Weights

MAX_LEVEL = 5


def skill_score(helper: Helper, request: Request) -> float:
    """Meeting the minimum earns 0.5; each level above it up to the maximum adds the rest."""
    parts = []
    for skill, minimum in request.skills.items():
        level = helper.skills.get(skill, 0)
        if minimum >= MAX_LEVEL:
            parts.append(1.0)
        else:
            parts.append(0.5 + 0.5 * max(0, level - minimum) / (MAX_LEVEL - minimum))
    return sum(parts) / len(parts)


def distance_score(distance_km: float | None, scale_km: float) -> float:
    return 1.0 if distance_km is None else exp(-distance_km / scale_km)


def fairness_score(load: int, capacity: int, recent: int = 0, recent_scale: float = 5.0) -> float:
    """Spread work and avoid burnout: a helper already holding assignments at that time, or
    asked often this past week, scores lower than an idle one."""
    return max(0.0, 1.0 - load / capacity) * exp(-recent / recent_scale)


def score(
    helper: Helper,
    request: Request,
    *,
    distance_km: float | None,
    coverage: float,
    load: int,
    weights: Weights,
    distance_scale_km: float = 10.0,
    recent: int = 0,
    recent_scale: float = 5.0,
) -> Scored:
    languages = request.languages
    breakdown = {
        "skill": skill_score(helper, request),
        "availability": coverage,
        "distance": distance_score(distance_km, distance_scale_km),
        "language": 0.0 if languages and languages.isdisjoint(helper.languages) else 1.0,
        "fairness": fairness_score(load, helper.capacity, recent, recent_scale),
    }
    total_weight = (
        weights.skill
        + weights.availability
        + weights.distance
        + weights.language
        + weights.fairness
    )
    value = (
        weights.skill * breakdown["skill"]
        + weights.availability * breakdown["availability"]
        + weights.distance * breakdown["distance"]
        + weights.language * breakdown["language"]
        + weights.fairness * breakdown["fairness"]
    ) / total_weight
    return Scored(helper=helper, score=min(1.0, max(0.0, value)), breakdown=breakdown)
