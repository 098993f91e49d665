"""Notification's settings (LEANON_ environment variables); the webhook secret is required."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator

from leanon_notification.limits import QuietHours
from leanon_notification.retries import RetryPolicy
from leanon_shared.settings import LeanOnSettings, SettingsError, require_secret


class SmtpServer:
    """Where and how to send email, parsed from LEANON_SMTP_URL (never logged: it may hold a
    password). smtp://[user:password@]host[:port] upgrades with STARTTLS when the server offers
    it; smtps:// speaks TLS from the first byte."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise SettingsError("LEANON_SMTP_URL must look like smtp://[user:pass@]host[:port]")
        self.implicit_tls = parts.scheme == "smtps"
        self.host = parts.hostname
        self.port = parts.port or (465 if self.implicit_tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None


class NotificationSettings(LeanOnSettings):
    notification_port: int = 8002
    # Processes sharing the port and the consumer groups: one Python process tops out at about
    # one core, and deliveries scale with processes up to the partitions of {prefix}events.
    notification_workers: int = Field(default=1, ge=1, le=64)
    webhook_secret: SecretStr | None = None
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    # Deliveries in flight at once, and how many of them one host may hold: a dead endpoint
    # can tie up at most its own share, never everyone's.
    max_in_flight: int = Field(default=1000, ge=1)
    max_in_flight_per_host: int = Field(default=500, ge=1)
    commit_interval_s: float = Field(default=0.5, gt=0)
    # Seconds before the 2nd, 3rd, ... attempt, one retry topic each; after the last, the DLQ.
    retry_delays_s: str = "1,5,30,120,600"
    smtp_url: SecretStr | None = None
    smtp_from: str = "LeanOn <notifications@leanon.invalid>"
    smtp_ca_file: str | None = None  # trust this CA for the SMTP server's certificate
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    smtp_connections: int = Field(default=20, ge=1)
    # Per-helper limits on offers (0 / empty: off). Quiet hours are in the helper's time zone.
    offers_per_hour: int = Field(default=0, ge=0)
    quiet_hours: str = ""

    @field_validator("retry_delays_s")
    @classmethod
    def _delays(cls, value: str) -> str:
        RetryPolicy.parse(value)
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str) -> str:
        QuietHours.parse(value)
        return value

    def signing_secret(self) -> bytes:
        return require_secret("webhook_secret", self.webhook_secret).encode()

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy.parse(self.retry_delays_s)

    def quiet(self) -> QuietHours | None:
        return QuietHours.parse(self.quiet_hours)

    def smtp(self) -> SmtpServer | None:
        raw = self.smtp_url.get_secret_value().strip() if self.smtp_url else ""
        return SmtpServer(raw) if raw else None
