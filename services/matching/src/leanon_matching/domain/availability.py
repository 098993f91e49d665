"""Does a helper's availability cover a request window? Weekly slots in the helper's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from leanon_matching.domain.model import Interval, Slot


def weekly_intervals(slots: tuple[Slot, ...], zone: str, window: Interval) -> list[Interval]:
    """The weekly slots as absolute UTC intervals around the window (DST-aware)."""
    tz = ZoneInfo(zone)
    first = window.start.astimezone(tz).date() - timedelta(days=1)
    last = window.end.astimezone(tz).date()
    out: list[Interval] = []
    day = first
    while day <= last:
        for slot in slots:
            if slot.weekday != day.weekday():
                continue
            start = datetime.combine(day, slot.start, tzinfo=tz)
            end_day = day + timedelta(days=1) if slot.ends_next_day else day
            end = datetime.combine(end_day, slot.end, tzinfo=tz)
            start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
            if end_utc > start_utc:
                out.append(Interval(start_utc, end_utc))
        day += timedelta(days=1)
    return out


def covered_seconds(intervals: list[Interval], window: Interval) -> float:
    """Seconds of the window covered by the union of the intervals."""
    clipped = sorted(
        (max(i.start, window.start), min(i.end, window.end))
        for i in intervals
        if i.overlaps(window)
    )
    total = 0.0
    cur_start, cur_end = None, None
    for start, end in clipped:
        if cur_end is None or start > cur_end:
            if cur_end is not None and cur_start is not None:
                total += (cur_end - cur_start).total_seconds()
            cur_start, cur_end = start, end
        elif end > cur_end:
            cur_end = end
    if cur_end is not None and cur_start is not None:
        total += (cur_end - cur_start).total_seconds()
    return total


def coverage(
    slots: tuple[Slot, ...], windows: tuple[Interval, ...], zone: str, window: Interval
) -> float:
    """Fraction in [0, 1] of the request window the helper is available for."""
    length = (window.end - window.start).total_seconds()
    if length <= 0:
        return 0.0
    intervals = weekly_intervals(slots, zone, window) + list(windows)
    return min(1.0, covered_seconds(intervals, window) / length)
