"""Every helper that matching ranks meets every hard constraint, checked independently."""

import asyncio
from datetime import UTC, datetime, timedelta
from math import asin, cos, radians, sin, sqrt

from hypothesis import given, settings
from hypothesis import strategies as st

from leanon_matching.domain.availability import covered_seconds, weekly_intervals
from leanon_matching.domain.model import Helper, Interval, Request
from leanon_matching.index import Candidate, Candidates
from leanon_matching.service import Matcher, MatchingConfig
from tests.unit.factories import weekly_slots

SKILLS = ["a", "b", "c"]


class FakeIndex:
    def __init__(self, helpers: list[Helper]) -> None:
        self.helpers = helpers

    async def candidates(self, request: Request, **_: object) -> Candidates:
        return Candidates(Candidate(h, 0, 0) for h in self.helpers)


class FakeReservations:
    def load_query(self, org: str, now: datetime) -> None:
        return None


def km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    a = (
        sin(radians(lat2 - lat1) / 2) ** 2
        + cos(radians(lat1)) * cos(radians(lat2)) * sin(radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0088 * asin(min(1.0, sqrt(a)))


helpers = st.builds(
    lambda i, skills, langs, lat, lon, radius, slots, zone: Helper(
        "o", f"h{i}", skills, frozenset(langs), lat, lon, radius, zone, slots, (), 2
    ),
    st.integers(0, 10**6),
    st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 5), min_size=1),
    st.lists(st.sampled_from(["en", "de", "es"]), max_size=2),
    st.floats(52.3, 52.7),
    st.floats(13.1, 13.7),
    st.sampled_from([2.0, 5.0, 10.0, 25.0]),
    weekly_slots(60, max_size=5),
    st.sampled_from(["UTC", "Europe/Berlin"]),
)


@settings(max_examples=150, deadline=None)
@given(
    pool=st.lists(helpers, max_size=25, unique_by=lambda h: h.id),
    need=st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 5), min_size=1, max_size=2),
    langs=st.lists(st.sampled_from(["en", "de", "es"]), max_size=1),
    lat=st.floats(52.3, 52.7),
    lon=st.floats(13.1, 13.7),
    hour=st.integers(0, 22),
    length=st.integers(1, 3),
)
def test_every_ranked_helper_meets_every_hard_constraint(
    pool: list[Helper],
    need: dict[str, int],
    langs: list[str],
    lat: float,
    lon: float,
    hour: int,
    length: int,
) -> None:
    start = datetime(2026, 12, 8, hour, tzinfo=UTC)
    window = Interval(start, start + timedelta(hours=length))
    request = Request("o", "r", need, frozenset(langs), lat, lon, window, "normal", 1, start)
    matcher = Matcher(
        index=FakeIndex(pool),
        reservations=FakeReservations(),  # type: ignore[arg-type]
        offers=None,
        store=None,
        timers=None,
        publish=None,  # type: ignore[arg-type]
        config=MatchingConfig(),
    )
    ranking = asyncio.run(matcher.rank(request))
    for scored in ranking.ranked:
        h = scored.helper
        assert all(h.skills.get(s, 0) >= lvl for s, lvl in need.items())
        assert not langs or set(langs) & h.languages
        assert km(h.lat, h.lon, lat, lon) <= h.radius_km + 1e-9  # type: ignore[arg-type]
        covered = covered_seconds(weekly_intervals(h.weekly, h.timezone, window), window)
        assert covered >= window_seconds(window) - 1e-6
        assert 0 <= scored.score <= 1
    assert len(ranking.ranked) + len(ranking.rejected) == len(pool)


def window_seconds(window: Interval) -> float:
    return (window.end - window.start).total_seconds()
