"""Per-helper limits that keep volunteers from overload: offers an hour, quiet hours.

`QuietHours` is pure; `OfferLimits` decides once per offer in Redis (atomically, in Lua), so a
redelivered offer gets the same decision and counts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.asyncio import Redis

from leanon_shared.settings import SettingsError

SEND = "send"
HOUR_MS = 3600 * 1000
DECISION_TTL_S = 14 * 24 * 3600


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily span of local time ("22:00-07:00" crosses midnight) when no offer is sent."""

    start: time
    end: time

    @classmethod
    def parse(cls, raw: str) -> QuietHours | None:
        raw = raw.strip()
        if not raw:
            return None
        try:
            a, b = (time.fromisoformat(p.strip()) for p in raw.split("-"))
        except ValueError as exc:
            raise SettingsError("LEANON_QUIET_HOURS must look like 22:00-07:00") from exc
        if a == b:
            raise SettingsError("LEANON_QUIET_HOURS must not start and end at the same time")
        return cls(a, b)

    def holds(self, now: datetime, timezone: str) -> bool:
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        local = now.astimezone(zone).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


# KEYS[1] = the offer's decision, KEYS[2] = the helper's offers sent in the last hour (zset).
# ARGV: now_ms, window_ms, max per window (0 = no limit), quiet reason ('' = not quiet),
# offer id, decision TTL. Returns the decision: 'send' or 'held:<reason>'.
_DECIDE = """
local d = redis.call('GET', KEYS[1])
if d then return d end
local now, window, most = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[4] ~= '' then
  d = 'held:' .. ARGV[4]
else
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if most > 0 and redis.call('ZCARD', KEYS[2]) >= most then
    d = 'held:rate'
  else
    redis.call('ZADD', KEYS[2], now, ARGV[5])
    redis.call('PEXPIRE', KEYS[2], window)
    d = 'send'
  end
end
redis.call('SET', KEYS[1], d, 'EX', tonumber(ARGV[6]))
return d
"""


@dataclass(frozen=True, slots=True)
class Decision:
    send: bool
    reason: str = ""


class OfferLimits:
    def __init__(self, redis: Redis, prefix: str, per_hour: int, quiet: QuietHours | None) -> None:
        self._r = redis
        self._p = prefix
        self.per_hour = per_hour
        self.quiet = quiet
        self._decide = redis.register_script(_DECIDE)

    @property
    def active(self) -> bool:
        return self.per_hour > 0 or self.quiet is not None

    def _decision_key(self, org: str, offer_id: str) -> str:
        return f"{self._p}limit:offer:{org}:{offer_id}"

    async def decide(
        self, org: str, helper_id: str, offer_id: str, timezone: str, now: datetime
    ) -> Decision:
        """Send this offer to the helper, or hold it back (and say why)?"""
        if not self.active:
            return Decision(True)
        quiet = ""
        if self.quiet is not None and self.quiet.holds(now, timezone):
            quiet = "quiet"
        raw = await self._decide(
            keys=[self._decision_key(org, offer_id), f"{self._p}limit:sent:{org}:{helper_id}"],
            args=[
                int(now.timestamp() * 1000),
                HOUR_MS,
                self.per_hour,
                quiet,
                offer_id,
                DECISION_TTL_S,
            ],
        )
        decision = raw.decode() if isinstance(raw, bytes) else str(raw)
        if decision == SEND:
            return Decision(True)
        if decision == "held:quiet":
            return Decision(False, f"quiet hours ({self.quiet} in {timezone})")
        return Decision(False, f"offer limit reached ({self.per_hour} an hour)")

    async def was_held(self, org: str, offer_id: str) -> bool:
        """True when this offer was held back: its helper never heard of it."""
        raw = await self._r.get(self._decision_key(org, offer_id))
        return isinstance(raw, bytes) and raw.startswith(b"held:")
