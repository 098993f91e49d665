"""The shared CloudEvents codec: structured and binary in, structured out."""

import re
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from leanon_shared.cloudevents import CloudEvent, InvalidEvent, decode, encode, now_iso


def test_structured_round_trip_keeps_every_attribute() -> None:
    event = CloudEvent(
        type="org.leanon.request.submitted",
        source="/crm",
        id="e1",
        subject="r1",
        data={"a": 1},
        extensions={"orgid": "o1"},
    )
    value, headers = encode(event)
    back = decode(value, headers)
    assert (back.type, back.source, back.id, back.subject) == (
        "org.leanon.request.submitted",
        "/crm",
        "e1",
        "r1",
    )
    assert back.data == {"a": 1}
    assert back.ext("orgid") == "o1"
    assert dict(headers)["content-type"] == b"application/cloudevents+json"


def test_binary_mode_reads_ce_headers_and_json_data() -> None:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"42"),
        ("ce_source", b"/sms"),
        ("ce_type", b"org.leanon.offer.accepted"),
        ("ce_subject", b"offer-1"),
        ("ce_orgid", b"o2"),
        ("content-type", b"application/json"),
    ]
    event = decode(b'{"x": true}', headers)
    assert event.id == "42" and event.subject == "offer-1" and event.ext("orgid") == "o2"
    assert event.data == {"x": True}


def test_structured_without_content_type_header_is_still_read() -> None:
    body = orjson.dumps({"specversion": "1.0", "id": "1", "source": "s", "type": "t"})
    assert decode(body, []).id == "1"


@pytest.mark.parametrize(
    ("value", "headers", "code"),
    [
        (b"\xff\xfe", [], "bad-json"),
        (b"[1, 2]", [], "bad-structure"),
        (b'{"specversion": "1.0", "source": "s", "type": "t"}', [], "missing-attribute"),
        (b'{"specversion": "0.3", "id": "1", "source": "s", "type": "t"}', [], "bad-specversion"),
        (b'{"specversion": "1.0", "id": 5, "source": "s", "type": "t"}', [], "bad-attribute"),
        (None, [], "empty"),
        (
            b"{}",
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"\xff"),
                ("ce_source", b"s"),
                ("ce_type", b"t"),
            ],
            "bad-attribute",
        ),
    ],
)
def test_bad_input_names_its_reason(
    value: bytes | None, headers: list[tuple[str, bytes]], code: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode(value, headers)
    assert caught.value.code == code
    assert caught.value.detail


def test_dedupe_key_is_source_plus_id() -> None:
    a = CloudEvent(type="t", source="s1", id="1")
    b = CloudEvent(type="t2", source="s1", id="1")
    c = CloudEvent(type="t", source="s2", id="1")
    assert a.dedupe_key == b.dedupe_key != c.dedupe_key


@pytest.mark.parametrize("value", [b"", None])
def test_binary_mode_without_data_has_no_data(value: bytes | None) -> None:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"1"),
        ("ce_source", b"/s"),
        ("ce_type", b"org.leanon.helper.removed"),
        ("content-type", b"application/json"),
    ]
    assert decode(value, headers).data is None


def test_now_iso_is_rfc3339_utc_with_milliseconds_and_current() -> None:
    before = datetime.now(UTC)
    stamp = now_iso()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - timedelta(milliseconds=1) <= parsed <= after


def test_now_iso_formats_a_given_instant_whatever_was_formatted_before() -> None:
    instant = datetime(2026, 11, 27, 1, 2, 3, 456_000, tzinfo=UTC).timestamp()
    now_iso()  # caches the current second: the given instant is in another
    assert now_iso(instant) == "2026-11-27T01:02:03.456Z"
    assert now_iso(instant + 60) == "2026-11-27T01:03:03.456Z"
