"""Does a helper's availability cover a request window? Weekly slots in the helper's zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from leanon_matching.domain.model import Interval, Slot

MINUTES_PER_DAY = 24 * 60


def weekly_intervals(slots: tuple[Slot, ...], zone: str, window: Interval) -> list[Interval]:
    """The weekly slots as absolute UTC intervals around the window (DST-aware)."""
    tz = time_zone(zone)
    first = window.start.astimezone(tz).date() - timedelta(days=1)
    last = window.end.astimezone(tz).date()
    out: list[Interval] = []
    day = first
    while day <= last:
        for slot in slots:
            if slot.weekday != day.weekday():
                continue
            start = _wall(day, slot.start, tz)
            end = _wall(day + timedelta(days=1) if slot.ends_next_day else day, slot.end, tz)
            start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
            if end_utc > start_utc:
                out.append(Interval(start_utc, end_utc))
        day += timedelta(days=1)
    return out


@lru_cache(maxsize=1024)
def time_zone(name: str) -> ZoneInfo:
    """The zone, held: ZoneInfo keeps only weak references to the zones it loaded, so a zone
    nothing else holds on to is read from disk again at its next use."""
    return ZoneInfo(name)


def _wall(day: date, minutes: int, tz: ZoneInfo) -> datetime:
    """Local wall-clock time on a day (1440 minutes is the next midnight), made aware."""
    if minutes >= MINUTES_PER_DAY:
        day, minutes = day + timedelta(days=1), minutes - MINUTES_PER_DAY
    return datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=tz)


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
    if not windows:
        fast = same_day_coverage(slots, zone, window)
        if fast is not None:
            return fast
    intervals = weekly_intervals(slots, zone, window) + list(windows)
    return min(1.0, covered_seconds(intervals, window) / length)


def same_day_coverage(slots: tuple[Slot, ...], zone: str, window: Interval) -> float | None:
    """The common case in microseconds: a window within one local day and one UTC offset.

    None when the window crosses local midnight or a daylight-saving change; the exact
    interval computation then decides.
    """
    local = local_span(zone, window.start, window.end)
    if local is None:
        return None
    weekday, a, b = local
    ranges: list[tuple[float, float]] = []
    for slot in slots:
        crosses = slot.end <= slot.start
        if slot.weekday == weekday:
            ranges.append((slot.start, MINUTES_PER_DAY if crosses else slot.end))
        if crosses and (slot.weekday + 1) % 7 == weekday:
            ranges.append((0, slot.end))
    covered, reach = 0.0, float(a)
    for lower, upper in sorted(ranges):
        lo, hi = max(lower, reach), min(upper, b)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return min(1.0, covered / (b - a))


@lru_cache(maxsize=4096)
def local_span(
    zone: str, start_utc: datetime, end_utc: datetime
) -> tuple[int, float, float] | None:
    """The window as (local weekday, start minute, end minute) in the zone, or None when it
    crosses local midnight or an offset change. Cached: a request's candidates mostly share a
    zone, and the zone conversion was the costliest step of checking each one."""
    tz = time_zone(zone)
    start, end = start_utc.astimezone(tz), end_utc.astimezone(tz)
    if start.utcoffset() != end.utcoffset():
        return None
    a = start.hour * 60 + start.minute + start.second / 60
    b = a + (end_utc - start_utc).total_seconds() / 60
    if b > MINUTES_PER_DAY:
        return None
    return start.weekday(), a, b
