"""Intake's settings (LEANON_ environment variables); API keys are required."""

from __future__ import annotations

from pydantic import Field, SecretStr

from leanon_intake.ratelimit import Limit
from leanon_shared.settings import PLACEHOLDER_SECRETS, LeanOnSettings, SettingsError


class IntakeSettings(LeanOnSettings):
    intake_port: int = 8000
    intake_workers: int = Field(default=1, ge=1, le=64)  # processes sharing the port
    api_keys: SecretStr | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Calls per second each org may make, with a burst; LEANON_RATE_LIMITS overrides some orgs
    # as "org:per_second[:burst]" pairs, comma separated.
    rate_limit_per_s: float = Field(default=1000, gt=0)
    rate_limit_burst: int = Field(default=2000, ge=1)
    rate_limits: str = ""

    def default_limit(self) -> Limit:
        return Limit(self.rate_limit_per_s, self.rate_limit_burst)

    def limit_overrides(self) -> dict[str, Limit]:
        overrides = {}
        for item in filter(None, (p.strip() for p in self.rate_limits.split(","))):
            org, _, rest = item.partition(":")
            rate, _, burst = rest.partition(":")
            try:
                limit = Limit(float(rate), int(burst) if burst else self.rate_limit_burst)
            except ValueError:
                limit = Limit(0, 0)
            if not org or limit.per_second <= 0 or limit.burst < 1:
                raise SettingsError(
                    f"LEANON_RATE_LIMITS entry {item!r} must look like org:per_second[:burst]"
                )
            overrides[org] = limit
        return overrides

    def key_to_org(self) -> dict[str, str]:
        """Parse 'org:key,org2:key2'; stop start-up when missing, malformed or a placeholder."""
        raw = self.api_keys.get_secret_value() if self.api_keys else ""
        mapping: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in raw.split(","))):
            org, sep, key = pair.partition(":")
            if not sep or not org or not key:
                raise SettingsError("LEANON_API_KEYS entries must look like org:key")
            if key.lower() in PLACEHOLDER_SECRETS or len(key) < 16:
                raise SettingsError(
                    f"LEANON_API_KEYS: the key of org {org!r} is too short "
                    "(16+ characters) or a placeholder"
                )
            mapping[key] = org
        if not mapping:
            raise SettingsError("LEANON_API_KEYS must name at least one org:key pair")
        return mapping
