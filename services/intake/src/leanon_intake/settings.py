"""Intake's settings (LEANON_ environment variables); API keys are required."""

from __future__ import annotations

from pydantic import Field, SecretStr

from leanon_shared.settings import PLACEHOLDER_SECRETS, LeanOnSettings, SettingsError


class IntakeSettings(LeanOnSettings):
    intake_port: int = 8000
    api_keys: SecretStr | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

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
