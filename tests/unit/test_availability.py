"""Weekly slots in the helper's zone: midnight crossings and daylight-saving changes."""

from datetime import UTC, datetime, timedelta

from leanon_matching.domain.availability import coverage
from leanon_matching.domain.model import Interval
from tests.unit.factories import slot


def window(start: datetime, hours: float) -> Interval:
    return Interval(start, start + timedelta(hours=hours))


def test_slot_in_local_time_is_shifted_to_utc() -> None:
    # Monday 09:00-17:00 Berlin is 08:00-16:00 UTC in winter.
    slots = (slot(0, "09:00", "17:00"),)
    monday = datetime(2026, 12, 7, tzinfo=UTC)
    assert coverage(slots, (), "Europe/Berlin", window(monday.replace(hour=8), 8)) == 1.0
    assert coverage(slots, (), "Europe/Berlin", window(monday.replace(hour=7), 2)) == 0.5


def test_slot_crossing_midnight_covers_the_next_morning() -> None:
    slots = (slot(4, "22:00", "02:00"),)  # Friday night
    saturday_1am = datetime(2026, 12, 12, 1, tzinfo=UTC)
    assert coverage(slots, (), "UTC", window(saturday_1am, 1)) == 1.0
    assert coverage(slots, (), "UTC", window(saturday_1am.replace(hour=2), 1)) == 0.0


def test_daylight_saving_change_moves_the_utc_slot() -> None:
    # Berlin switches to summer time on 2027-03-28: 09:00 local is 08:00 UTC before, 07:00 after.
    slots = (slot(6, "09:00", "10:00"),)  # Sundays
    before = datetime(2027, 3, 21, 8, tzinfo=UTC)
    after = datetime(2027, 3, 28, 7, tzinfo=UTC)
    assert coverage(slots, (), "Europe/Berlin", window(before, 1)) == 1.0
    assert coverage(slots, (), "Europe/Berlin", window(after, 1)) == 1.0
    assert coverage(slots, (), "Europe/Berlin", window(after.replace(hour=8), 1)) == 0.0


def test_one_off_windows_and_slots_combine() -> None:
    monday = datetime(2026, 12, 7, tzinfo=UTC)
    slots = (slot(0, "10:00", "11:00"),)
    extra = (Interval(monday.replace(hour=11), monday.replace(hour=12)),)
    assert coverage(slots, extra, "UTC", window(monday.replace(hour=10), 2)) == 1.0
    assert coverage(slots, (), "UTC", window(monday.replace(hour=10), 2)) == 0.5


def test_overlapping_slots_are_not_counted_twice() -> None:
    monday = datetime(2026, 12, 7, tzinfo=UTC)
    slots = (slot(0, "10:00", "12:00"), slot(0, "11:00", "12:00"))
    assert coverage(slots, (), "UTC", window(monday.replace(hour=10), 4)) == 0.5
