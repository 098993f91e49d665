"""Notification's pure rules: outcome classes, the retry schedule, quiet hours, email text."""

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pydantic import SecretStr

from leanon_notification.limits import QuietHours
from leanon_notification.messages import render
from leanon_notification.reporter import REPORT_NAMESPACE, Report, report_id
from leanon_notification.retries import (
    MIN_DEFER_S,
    Retry,
    RetryPolicy,
    again_in,
    classify_http,
    deferred,
    delay_name,
    parse_retry_after,
    retryable,
)
from leanon_notification.settings import NotificationSettings
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent
from leanon_shared.settings import SettingsError

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (299, "delivered"),
        (301, "permanent"),  # redirects are not followed: a webhook URL must be the real one
        (400, "permanent"),
        (401, "permanent"),
        (404, "permanent"),
        (410, "permanent"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
    ],
)
def test_http_status_classes(status: int, kind: str) -> None:
    outcome = classify_http(status)
    assert outcome.delivered == (kind == "delivered")
    assert outcome.permanent == (kind == "permanent")
    assert outcome.retryable == (kind == "retry")
    assert outcome.status == status


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Mon, 07 Dec 2026 12:00:30 GMT", NOW) == 30.0
    assert parse_retry_after("Mon, 07 Dec 2026 11:00:00 GMT", NOW) == 0.0  # already past
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert classify_http(429, "3").retry_after_s == 3.0


def test_retries_grow_then_give_up() -> None:
    policy = RetryPolicy.parse("1, 5,30")
    assert policy.max_attempts == 4
    failed = retryable("http 503", 503)
    assert [policy.after(n, failed) for n in (1, 2, 3, 4)] == [Retry(1), Retry(5), Retry(30), None]
    assert policy.after(1, classify_http(410)) is None  # permanent: no retry at all


def test_retry_after_picks_a_topic_at_least_that_long_capped_at_the_longest() -> None:
    policy = RetryPolicy.parse("1,5,30")
    assert policy.after(1, retryable("http 429", 429, after=3)) == Retry(5)
    assert policy.after(1, retryable("http 429", 429, after=0.5)) == Retry(1)
    assert policy.after(1, retryable("http 429", 429, after=3600)) == Retry(30)


def test_a_delivery_never_sent_goes_again_when_its_host_should_have_room() -> None:
    assert again_in(deferred("host busy", after=0.3), 1.0) == 0.3
    assert again_in(deferred("host busy", after=7.5), 1.0) == 1.0  # never past the shortest
    assert again_in(deferred("host busy", after=0.0001), 1.0) == MIN_DEFER_S  # nor hot
    assert again_in(deferred("host busy"), 1.0) == 1.0  # not known: a round of the shortest
    assert not deferred("host busy", after=0.3).attempted


def test_retry_topics_one_per_distinct_delay() -> None:
    assert RetryPolicy.parse("0.2,0.2,1").topic_delays == (0.2, 1.0)
    assert delay_name(0.2) == "200ms" and delay_name(30) == "30000ms"
    for bad in ["a,b", "1,0", "-1"]:
        with pytest.raises(SettingsError):
            RetryPolicy.parse(bad)


def test_quiet_hours_in_the_helpers_time_zone() -> None:
    quiet = QuietHours.parse("22:00-07:00")
    assert quiet is not None
    # 12:00 UTC is 21:00 in Tokyo (not quiet yet) and 01:00 in Auckland (quiet, NZDT +13).
    assert not quiet.holds(NOW, "Asia/Tokyo")
    assert quiet.holds(NOW + timedelta(hours=1), "Asia/Tokyo")
    assert quiet.holds(NOW, "Pacific/Auckland")
    assert not quiet.holds(NOW, "Europe/Berlin")
    assert quiet.holds(NOW.replace(hour=6, minute=59), "UTC")
    assert not quiet.holds(NOW.replace(hour=7), "UTC")
    day = QuietHours.parse("13:00-14:00")
    assert day is not None and day.holds(NOW.replace(hour=13, minute=30), "UTC")
    assert QuietHours.parse("") is None
    with pytest.raises(SettingsError):
        QuietHours.parse("late")


def test_settings_parse_smtp_url_and_refuse_bad_limits() -> None:
    s = NotificationSettings(smtp_url=SecretStr("smtp://user:p%40ss@mail.example.org:2525"))
    smtp = s.smtp()
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.username, smtp.password) == (
        "mail.example.org",
        2525,
        "user",
        "p@ss",
    )
    assert not smtp.implicit_tls
    tls = NotificationSettings(smtp_url=SecretStr("smtps://mail.example.org")).smtp()
    assert tls is not None and tls.implicit_tls and tls.port == 465
    assert NotificationSettings().smtp() is None
    with pytest.raises(SettingsError):
        NotificationSettings(smtp_url=SecretStr("http://mail.example.org")).smtp()
    with pytest.raises(ValueError, match="QUIET_HOURS"):
        NotificationSettings(quiet_hours="9pm to 6am")
    with pytest.raises(ValueError, match="RETRY_DELAYS"):
        NotificationSettings(retry_delays_s="soon")


def test_email_carries_the_facts_and_a_stable_message_id() -> None:
    event = CloudEvent(
        type=ev.OFFER_CREATED,
        source=ev.SOURCE_MATCHING,
        id="evt-1",
        subject="r-1",
        data={
            "request_id": "r-1",
            "offer_id": "o-1",
            "helper_id": "h-1",
            "score": 0.83,
            "window": {"start": "2026-12-01T09:00:00+00:00", "end": "2026-12-01T10:00:00+00:00"},
            "expires_at": "2026-12-01T08:00:00+00:00",
            "skills": {"first_aid": 2},
            "description": "Groceries upstairs",
        },
    )
    mail = render(event, "LeanOn <n@leanon.invalid>", "h1@example.org")
    text = mail.get_content()
    for fact in ["o-1", "r-1", "2026-12-01T09:00:00", "first_aid (level 2)", "Groceries upstairs"]:
        assert fact in text
    assert mail["To"] == "h1@example.org" and mail["X-LeanOn-Event-Id"] == "evt-1"
    assert mail["Message-ID"] == render(event, "x@y.z", "h1@example.org")["Message-ID"]
    unmatched = CloudEvent(
        type=ev.REQUEST_UNMATCHED,
        source=ev.SOURCE_MATCHING,
        data={"request_id": "r-2", "reason": "no helper with skill diving within 10 km"},
    )
    assert (
        "no helper with skill diving" in render(unmatched, "a@b.c", "r@example.org").get_content()
    )


def test_a_report_kept_in_redis_comes_back_whole() -> None:
    report = Report(True, "webhook", 3, 12.5, "", 204, False)
    assert Report(**orjson.loads(orjson.dumps(report.as_dict()))) == report
    assert set(report.as_dict()) == {f.name for f in dataclasses.fields(Report)}


@pytest.mark.parametrize("name", ["", "matching|e-1|helper|h1|webhook|x", "ü|日本|" * 40])
def test_report_ids_are_the_uuid5_they_always_were(name: str) -> None:
    """A report repeated after an upgrade must keep its id."""
    assert report_id(name) == str(uuid.uuid5(REPORT_NAMESPACE, name))
