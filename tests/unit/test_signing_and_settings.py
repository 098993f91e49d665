"""Webhook signatures verify only with the right secret; settings refuse placeholders."""

import pytest
from pydantic import SecretStr

from leanon_intake.settings import IntakeSettings
from leanon_notification.settings import NotificationSettings
from leanon_notification.signing import sign, verify
from leanon_shared.settings import SettingsError

SECRET = b"a-long-enough-test-secret"


def test_signature_verifies_with_the_secret_and_not_another() -> None:
    body = b'{"id":"1"}'
    header = sign(body, SECRET, now=1_800_000_000)
    assert header.startswith("t=1800000000,v1=")
    assert verify(body, header, SECRET, now=1_800_000_010)
    assert not verify(body, header, b"another-secret-entirely", now=1_800_000_010)
    assert not verify(body + b" ", header, SECRET, now=1_800_000_010)
    assert not verify(body, header, SECRET, now=1_800_001_000)  # stale


@pytest.mark.parametrize("value", [None, "", "changeme", "short"])
def test_notification_refuses_a_missing_or_placeholder_secret(value: str | None) -> None:
    settings = NotificationSettings(webhook_secret=SecretStr(value) if value is not None else None)
    with pytest.raises(SettingsError, match="WEBHOOK_SECRET"):
        settings.signing_secret()


def test_api_keys_parse_to_orgs_and_refuse_placeholders() -> None:
    ok = IntakeSettings(api_keys=SecretStr("a:0123456789abcdefX, b:fedcba9876543210Y"))
    assert ok.key_to_org() == {"0123456789abcdefX": "a", "fedcba9876543210Y": "b"}
    for bad in ["", "a:changeme", "nokey", "a:short"]:
        with pytest.raises(SettingsError):
            IntakeSettings(api_keys=SecretStr(bad)).key_to_org()


def test_rate_limit_overrides_parse_per_org() -> None:
    from leanon_intake.ratelimit import Limit

    settings = IntakeSettings(rate_limit_burst=50, rate_limits="a:10, b:2.5:7")
    assert settings.limit_overrides() == {"a": Limit(10, 50), "b": Limit(2.5, 7)}
    for bad in ["a", "a:0", "a:x", ":5", "a:5:0"]:
        with pytest.raises(SettingsError):
            IntakeSettings(rate_limits=bad).limit_overrides()
