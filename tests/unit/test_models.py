"""Wire-model validation: the contract's limits, and no server-side request forgery."""

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from leanon_intake.ssrf import WebhookHosts
from leanon_shared.models import Contact, HelperProfile, RequestSubmission

HELPER = {"skills": {"first_aid": 3}, "contact": {"email": "a@example.org"}}


def request_body(**over: object) -> dict[str, object]:
    start = datetime.now(UTC) + timedelta(days=1)
    body: dict[str, object] = {
        "skills": {"first_aid": 2},
        "window": {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
    }
    body.update(over)
    return body


def test_helper_defaults_and_round_trip() -> None:
    helper = HelperProfile.model_validate(HELPER)
    assert helper.capacity == 1 and helper.availability.timezone == "UTC"


@pytest.mark.parametrize(
    "change",
    [
        {"skills": {}},
        {"skills": {"First Aid": 3}},
        {"skills": {"first_aid": 6}},
        {"languages": ["english"]},
        {"radius_km": 0},
        {"radius_km": 501},
        {"capacity": 21},
        {"contact": {}},
        {"contact": {"webhook_url": "ftp://example.org/x"}},
        {"availability": {"timezone": "Mars/Olympus"}},
        {"availability": {"weekly": [{"day": "mon", "start": "25:00", "end": "26:00"}]}},
        {"unexpected": 1},
    ],
)
def test_helper_limits_are_enforced(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        HelperProfile.model_validate(HELPER | change)


def test_request_window_must_be_sane() -> None:
    RequestSubmission.model_validate(request_body())
    start = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(ValidationError, match="after its start"):
        RequestSubmission.model_validate(
            request_body(window={"start": start.isoformat(), "end": start.isoformat()})
        )
    with pytest.raises(ValidationError, match="31 days"):
        RequestSubmission.model_validate(
            request_body(
                window={"start": start.isoformat(), "end": (start + timedelta(days=40)).isoformat()}
            )
        )
    old = datetime.now(UTC) - timedelta(days=3)
    with pytest.raises(ValidationError, match="more than a day ago"):
        RequestSubmission.model_validate(
            request_body(
                window={"start": old.isoformat(), "end": (old + timedelta(hours=1)).isoformat()}
            )
        )


def test_expiry_defaults_to_window_start() -> None:
    sub = RequestSubmission.model_validate(request_body())
    assert sub.effective_expiry == sub.window.start


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:9/x",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://192.168.1.1/",
    ],
)
async def test_private_webhook_targets_are_refused(url: str) -> None:
    assert await WebhookHosts(frozenset()).refusal(Contact(webhook_url=url)) is not None


async def test_allowed_hosts_may_be_private() -> None:
    contact = Contact(webhook_url="http://127.0.0.1:9000/hook")
    assert await WebhookHosts(frozenset({"127.0.0.1"})).refusal(contact) is None


async def test_public_webhook_host_passes() -> None:
    contact = Contact(webhook_url="https://93.184.215.14/h")
    assert await WebhookHosts(frozenset()).refusal(contact) is None


async def test_a_name_that_resolves_to_an_internal_address_is_refused() -> None:
    answers = {"inside.example.org": ["93.184.215.14", "10.0.0.7"], "out.example.org": ["1.1.1.1"]}
    looked_up: list[str] = []

    async def resolver(host: str) -> list[str]:
        looked_up.append(host)
        return answers[host]

    hosts = WebhookHosts(frozenset(), resolver)
    assert await hosts.refusal(Contact(webhook_url="https://inside.example.org/h")) is not None
    assert await hosts.refusal(Contact(webhook_url="https://out.example.org/h")) is None
    assert await hosts.refusal(Contact(webhook_url="https://inside.example.org/2")) is not None
    assert looked_up == ["inside.example.org", "out.example.org"]  # the answer is cached


async def test_a_host_that_does_not_resolve_is_left_to_delivery() -> None:
    async def resolver(host: str) -> list[str]:
        raise OSError("no such host")

    contact = Contact(webhook_url="https://nowhere.invalid/h")
    assert await WebhookHosts(frozenset(), resolver).refusal(contact) is None
