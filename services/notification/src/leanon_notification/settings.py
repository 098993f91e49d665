"""Notification's settings (LEANON_ environment variables); the webhook secret is required."""

from __future__ import annotations

from pydantic import Field, SecretStr

from leanon_shared.settings import LeanOnSettings, require_secret


class NotificationSettings(LeanOnSettings):
    notification_port: int = 8002
    webhook_secret: SecretStr | None = None
    smtp_url: SecretStr | None = None
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    max_in_flight: int = Field(default=200, ge=1)

    def signing_secret(self) -> bytes:
        return require_secret("webhook_secret", self.webhook_secret).encode()
