"""Domain types for matching: helpers and requests as matching sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Slot:
    """A weekly slot in the helper's zone, in minutes from local midnight (end up to 1440);
    weekday 0 is Monday; an end at or before the start crosses midnight."""

    weekday: int
    start: int
    end: int

    @property
    def ends_next_day(self) -> bool:
        return self.end <= self.start


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime
    end: datetime

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True, slots=True)
class Helper:
    org: str
    id: str
    skills: dict[str, int]
    languages: frozenset[str]
    lat: float | None
    lon: float | None
    radius_km: float
    timezone: str
    weekly: tuple[Slot, ...]
    windows: tuple[Interval, ...]
    capacity: int


@dataclass(frozen=True, slots=True)
class Request:
    org: str
    id: str
    skills: dict[str, int]
    languages: frozenset[str]
    lat: float | None
    lon: float | None
    window: Interval
    urgency: str
    helpers_needed: int
    expires_at: datetime
    description: str = ""
    region: str = ""

    @property
    def has_location(self) -> bool:
        return self.lat is not None and self.lon is not None


@dataclass(frozen=True, slots=True)
class Weights:
    skill: float = 0.3
    availability: float = 0.2
    distance: float = 0.25
    language: float = 0.1
    fairness: float = 0.15


@dataclass(frozen=True, slots=True)
class Scored:
    helper: Helper
    score: float
    breakdown: dict[str, float] = field(default_factory=dict)
