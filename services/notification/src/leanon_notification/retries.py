"""When to try a delivery again: classification of outcomes and the retry-topic schedule.

Pure: no Kafka, no HTTP. A retryable failure goes to the retry topic whose delay is the
smallest one at least as long as the wait needed (the next delay in the schedule, or a longer
Retry-After), so within one retry topic every record falls due in the order it was written and a
consumer can pause a partition until its head is due. (A delivery that was never sent, `deferred`,
may be due sooner than the records ahead of it in the shortest topic; it waits for them, so it
is never handled early, at worst as late as the topic's delay.)
"""

from __future__ import annotations

import email.utils
import functools
from dataclasses import dataclass
from datetime import UTC, datetime

from leanon_shared.settings import SettingsError


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to. `retry_after_s` is the receiver's own wish (429/503);
    `attempted` is False when nothing was sent at all (see `deferred`)."""

    delivered: bool
    permanent: bool
    detail: str
    status: int | None = None
    retry_after_s: float | None = None
    attempted: bool = True

    @property
    def retryable(self) -> bool:
        return not self.delivered and not self.permanent


@functools.lru_cache(maxsize=128)
def delivered(status: int | None = None) -> Outcome:
    """One (frozen) Outcome per status, shared: nearly every attempt comes to one of these."""
    return Outcome(True, False, "ok", status)


def permanent(detail: str, status: int | None = None) -> Outcome:
    return Outcome(False, True, detail, status)


def retryable(detail: str, status: int | None = None, after: float | None = None) -> Outcome:
    return Outcome(False, False, detail, status, after)


def deferred(detail: str, after: float | None = None) -> Outcome:
    """Not sent, through no fault of the receiver's (a healthy host with every slot taken):
    try again soon (`after`: when the host should have room, if known), and spend none of the
    delivery's attempts on it."""
    return Outcome(False, False, detail, retry_after_s=after, attempted=False)


def classify_http(
    status: int, retry_after: str | None = None, now: datetime | None = None
) -> Outcome:
    """2xx delivered; 408, 429 and 5xx worth another try; any other answer is final."""
    if 200 <= status < 300:
        return delivered(status)
    if status >= 500 or status in (408, 429):
        return retryable(f"http {status}", status, parse_retry_after(retry_after, now))
    return permanent(f"http {status}", status)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again through the retry topic of this delay."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    delays_s: tuple[float, ...]

    @classmethod
    def parse(cls, raw: str) -> RetryPolicy:
        try:
            delays = tuple(float(p) for p in raw.split(",") if p.strip())
        except ValueError as exc:
            raise SettingsError("LEANON_RETRY_DELAYS_S must be seconds, comma separated") from exc
        if any(d <= 0 for d in delays):
            raise SettingsError("LEANON_RETRY_DELAYS_S must all be positive")
        return cls(delays)

    @property
    def max_attempts(self) -> int:
        return len(self.delays_s) + 1

    @property
    def topic_delays(self) -> tuple[float, ...]:
        """One retry topic per distinct delay, shortest first."""
        return tuple(sorted(set(self.delays_s)))

    def after(self, attempt: int, outcome: Outcome) -> Retry | None:
        """What follows failed attempt number `attempt` (1 = the first): a retry, or give up.

        Retry-After is honoured up to the longest delay: the retry goes to the shortest topic
        whose delay is at least what the receiver asked for.
        """
        if not outcome.retryable or attempt >= self.max_attempts:
            return None
        wait = self.delays_s[attempt - 1]
        if outcome.retry_after_s is not None:
            wait = max(wait, outcome.retry_after_s)
        for delay in self.topic_delays:
            if delay >= wait:
                return Retry(delay)
        return Retry(self.topic_delays[-1])


MIN_DEFER_S = 0.05


def again_in(outcome: Outcome, shortest_s: float) -> float:
    """When a delivery that was never sent goes again: when its host should have room, but not
    sooner than MIN_DEFER_S (each round costs a Kafka record) nor later than the shortest retry
    delay, the round it takes when that is not known."""
    if outcome.retry_after_s is None:
        return shortest_s
    return min(max(outcome.retry_after_s, MIN_DEFER_S), shortest_s)


def delay_name(delay_s: float) -> str:
    """A topic-safe name for a delay: 1.5 -> '1500ms'."""
    return f"{round(delay_s * 1000)}ms"
