"""Settings shared by every service: environment variables with the LEANON_ prefix."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "password", "xxx", "todo"})


class SettingsError(ValueError):
    """A setting is missing or unusable; start-up must stop with this message."""


class LeanOnSettings(BaseSettings):
    """The base every service's settings build on."""

    model_config = SettingsConfigDict(env_prefix="LEANON_", extra="ignore", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # How long a starting service waits for Redis (unreachable, or loading its dataset
    # after a restart) before it gives up.
    redis_wait_s: float = Field(default=300, ge=0)
    topic_prefix: str = "leanon."
    topic_partitions: int = Field(default=6, ge=1, le=1024)
    log_level: str = "INFO"
    service_host: str = "127.0.0.1"
    webhook_allow_hosts: str = ""

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed:
            raise ValueError("topic prefix may hold only letters, digits, '.', '_' and '-'")
        return value

    @property
    def allowed_webhook_hosts(self) -> frozenset[str]:
        return frozenset(
            h.strip().lower() for h in self.webhook_allow_hosts.split(",") if h.strip()
        )


def require_secret(name: str, value: SecretStr | None, min_length: int = 16) -> str:
    """Return a secret's value, or stop start-up when it is missing or a placeholder."""
    raw = value.get_secret_value() if value is not None else ""
    if raw.strip().lower() in PLACEHOLDER_SECRETS:
        raise SettingsError(f"LEANON_{name.upper()} must be set to a real secret")
    if len(raw) < min_length:
        raise SettingsError(f"LEANON_{name.upper()} must be at least {min_length} characters")
    return raw
