"""The same-day fast path agrees with the exact interval computation."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from leanon_matching.domain.availability import covered_seconds, same_day_coverage, weekly_intervals
from leanon_matching.domain.model import Interval, Slot

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Sydney"]
slot_strategy = st.builds(
    lambda d, s, e: Slot(d, s, e),
    st.integers(0, 6),
    st.integers(0, 24 * 60 - 15).map(lambda m: m - m % 15),
    st.integers(0, 24 * 60 - 15).map(lambda m: m - m % 15),
)


@settings(max_examples=300, deadline=None)
@given(
    slots=st.lists(slot_strategy, max_size=6).map(tuple),
    zone=st.sampled_from(ZONES),
    start_min=st.integers(0, 60 * 24 * 400),
    length_min=st.integers(15, 600),
)
def test_fast_path_matches_exact_coverage(
    slots: tuple[Slot, ...], zone: str, start_min: int, length_min: int
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=start_min)
    window = Interval(start, start + timedelta(minutes=length_min))
    fast = same_day_coverage(slots, zone, window)
    if fast is None:
        return  # crosses local midnight or a DST change: the exact path decides
    exact = covered_seconds(weekly_intervals(slots, zone, window), window) / (length_min * 60)
    assert abs(fast - min(1.0, exact)) < 1e-6
