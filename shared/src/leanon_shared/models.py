"""Wire models: the JSON bodies that cross HTTP and Kafka, validated at the edge.

Services convert these to their own domain types; nothing here knows about matching rules.
"""

from __future__ import annotations

import functools
import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from leanon_shared.languages import ISO_639_1

SkillName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,40}$")]
Level = Annotated[int, Field(ge=1, le=5)]
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"  # ids in bodies, paths, headers and events
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Urgency = Literal["low", "normal", "high", "critical"]
HHMM = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")]
MAX_WINDOW = timedelta(days=31)
MAX_PAST = timedelta(days=1)


def _language(code: str) -> str:
    if code not in ISO_639_1:
        raise ValueError(f"{code!r} is not an ISO 639-1 language code")
    return code


Language = Annotated[str, AfterValidator(_language)]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Location(WireModel):
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)


class WeeklySlot(WireModel):
    """A weekly slot in the helper's time zone; an end at or before the start crosses midnight."""

    day: Day
    start: HHMM
    end: HHMM


class Window(WireModel):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("window end must be after its start")
        if self.end - self.start > MAX_WINDOW:
            raise ValueError(f"window may span at most {MAX_WINDOW.days} days")
        return self


class Availability(WireModel):
    timezone: str = "UTC"
    weekly: list[WeeklySlot] = Field(default_factory=list, max_length=100)
    windows: list[Window] = Field(default_factory=list, max_length=100)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone") from exc
        return value


@functools.lru_cache(maxsize=4096)
def host_is_private(host: str) -> bool:
    """True when the host is a loopback name or a literal internal address (no DNS lookup).
    Cached: every submission with a webhook asks, mostly about the same few hosts."""
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return is_internal(ipaddress.ip_address(host))
    except ValueError:
        return False


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def resolved_address(raw: str | int) -> IPAddress:
    """An address from getaddrinfo, without an IPv6 zone suffix."""
    return ipaddress.ip_address(str(raw).split("%")[0])


def is_internal(a: IPAddress) -> bool:
    """Loopback, private, link-local and other addresses no webhook may reach."""
    return (
        a.is_private
        or a.is_loopback
        or a.is_link_local
        or a.is_reserved
        or a.is_unspecified
        or a.is_multicast
    )


class Contact(WireModel):
    webhook_url: str | None = Field(default=None, max_length=2048)
    email: str | None = Field(
        default=None, max_length=254, pattern=r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"
    )

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("webhook_url must be an http(s) URL with a host")
        return value

    @model_validator(mode="after")
    def _at_least_one(self) -> Contact:
        if not self.webhook_url and not self.email:
            raise ValueError("contact needs a webhook_url or an email")
        return self


class HelperProfile(WireModel):
    """The body of PUT /v1/helpers/{id} and of org.leanon.helper.upserted."""

    skills: dict[SkillName, Level] = Field(min_length=1, max_length=50)
    languages: list[Language] = Field(default_factory=list, max_length=20)
    location: Location | None = None
    radius_km: float = Field(default=10, gt=0, le=500, allow_inf_nan=False)
    availability: Availability = Field(default_factory=Availability)
    capacity: int = Field(default=1, ge=1, le=20)
    contact: Contact


class RequestSubmission(WireModel):
    """The body of POST /v1/requests and of org.leanon.request.submitted."""

    id: Identifier | None = None
    skills: dict[SkillName, Level] = Field(min_length=1, max_length=20)
    languages: list[Language] = Field(default_factory=list, max_length=20)
    location: Location | None = None
    window: Window
    urgency: Urgency = "normal"
    helpers_needed: int = Field(default=1, ge=1, le=20)
    expires_at: AwareDatetime | None = None
    description: str = Field(default="", max_length=2000)
    contact: Contact | None = None

    @model_validator(mode="after")
    def _sane_times(self, info: ValidationInfo) -> RequestSubmission:
        if info.context and info.context.get("stored"):
            return self  # checked when it was accepted; time has moved on since
        now = datetime.now(UTC)
        if self.window.end < now - MAX_PAST:
            raise ValueError("window ended more than a day ago")
        if self.expires_at is not None and self.expires_at > self.window.end:
            raise ValueError("expires_at must not be after the window ends")
        return self

    @property
    def effective_expiry(self) -> datetime:
        return self.expires_at or self.window.start


# -- records on internal topics -------------------------------------------------------------


class HelperRecord(WireModel):
    """Value on {prefix}helpers (compacted, key = org/helper_id); contact included, never logged."""

    org: str
    helper_id: str
    version: int
    profile: HelperProfile
    updated_at: datetime


def helper_key(org: str, helper_id: str) -> bytes:
    return f"{org}/{helper_id}".encode()
