"""Small builders for domain objects used across unit tests."""

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from leanon_matching.domain.model import Helper, Interval, Request, Slot

MONDAY = datetime(2026, 12, 7, tzinfo=UTC)  # a Monday


def slot(day: int, start: str, end: str) -> Slot:
    (sh, sm), (eh, em) = (map(int, start.split(":")), map(int, end.split(":")))
    return Slot(day, sh * 60 + sm, eh * 60 + em)


def weekly_slots(step_minutes: int, max_size: int) -> st.SearchStrategy[tuple[Slot, ...]]:
    """Hypothesis: a helper's weekly slots on a grid of `step_minutes` (empty, reversed and
    zero-length ones included, as a careless client could send)."""
    steps = 24 * 60 // step_minutes
    return st.lists(
        st.builds(
            lambda d, s, e: Slot(d, s * step_minutes, e * step_minutes),
            st.integers(0, 6),
            st.integers(0, steps - 1),
            st.integers(0, steps),
        ),
        max_size=max_size,
    ).map(tuple)


def helper(**over: object) -> Helper:
    base: dict[str, object] = dict(
        org="o",
        id="h1",
        skills={"first_aid": 3},
        languages=frozenset({"en"}),
        lat=52.52,
        lon=13.405,
        radius_km=10.0,
        timezone="UTC",
        weekly=tuple(slot(d, "00:00", "00:00") for d in range(7)),
        windows=(),
        capacity=1,
    )
    base.update(over)
    return Helper(**base)  # type: ignore[arg-type]


def request(**over: object) -> Request:
    start = MONDAY + timedelta(hours=10)
    base: dict[str, object] = dict(
        org="o",
        id="r1",
        skills={"first_aid": 2},
        languages=frozenset(),
        lat=52.51,
        lon=13.39,
        window=Interval(start, start + timedelta(hours=1)),
        urgency="normal",
        helpers_needed=1,
        expires_at=start,
    )
    base.update(over)
    return Request(**base)  # type: ignore[arg-type]
