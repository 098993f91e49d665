"""The contact book's consumers against real Redis: a batch is written in one round trip, in
order, and a record that cannot be read is skipped without losing the rest of its batch."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from aiokafka import ConsumerRecord
from redis.asyncio import Redis

from leanon_notification.contacts import REQUESTER_TTL_S, ContactBook, Reach
from leanon_notification.handlers import HelperContacts, RequesterContacts
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent, encode
from leanon_shared.models import Contact, HelperRecord, helper_key
from tests.integration.harness import helper

ORG = "o"


def record(offset: int, key: bytes | None, value: bytes | None, headers=()) -> ConsumerRecord:
    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=list(headers),
    )


def helper_record(offset: int, helper_id: str, webhook: str, tz: str = "UTC") -> ConsumerRecord:
    week = [{"day": "mon", "start": "09:00", "end": "17:00"}]
    profile = helper(
        contact={"webhook_url": webhook}, availability={"timezone": tz, "weekly": week}
    )
    stored = HelperRecord(
        org=ORG, helper_id=helper_id, version=offset, profile=profile, updated_at=datetime.now(UTC)
    )
    return record(offset, helper_key(ORG, helper_id), stored.model_dump_json().encode())


def submitted(offset: int, request_id: str, contact: dict | None) -> ConsumerRecord:
    request = {"helpers_needed": 1} | ({"contact": contact} if contact else {})
    command = CloudEvent(
        type=ev.REQUEST_SUBMITTED,
        source=ev.SOURCE_INTAKE,
        subject=request_id,
        data={"request_id": request_id, "region": "r", "request": request},
        extensions={ev.ORG_EXTENSION: ORG},
    )
    value, headers = encode(command)
    return record(offset, b"r", value, headers)


async def test_helper_contacts_batch_last_write_wins(redis: Redis, prefix: str) -> None:
    book = ContactBook(redis, prefix)
    await book.put(ORG, "helper", "gone", Contact(webhook_url="https://old.example.org/x"))
    batch = [
        helper_record(1, "ana", "https://a1.example.org/hook", "Europe/Berlin"),
        record(2, helper_key(ORG, "bad"), b"{not json"),
        helper_record(3, "ben", "https://b.example.org/hook"),
        helper_record(4, "ana", "https://a2.example.org/hook", "Europe/Lisbon"),
        record(5, helper_key(ORG, "gone"), None),
    ]
    await HelperContacts(book)(batch)

    ana = await book.get(ORG, "helper", "ana")
    assert isinstance(ana, Reach)
    assert str(ana.contact.webhook_url) == "https://a2.example.org/hook"
    assert ana.timezone == "Europe/Lisbon"
    ben = await book.get(ORG, "helper", "ben")
    assert isinstance(ben, Reach) and str(ben.contact.webhook_url) == "https://b.example.org/hook"
    assert await book.get(ORG, "helper", "gone") is None  # erased: nobody to tell
    assert await redis.ttl(book.key(ORG, "helper", "ana")) == -1  # helpers do not expire
    assert await redis.exists(book.key(ORG, "helper", "bad")) == 0


async def test_requester_contacts_from_submissions(redis: Redis, prefix: str) -> None:
    book = ContactBook(redis, prefix)
    other = CloudEvent(
        type=ev.REQUEST_CANCELLED,
        source=ev.SOURCE_INTAKE,
        subject="r-1",
        data={"request_id": "r-1"},
        extensions={ev.ORG_EXTENSION: ORG},
    )
    batch = [
        submitted(1, "r-1", {"email": "r1@example.org"}),
        record(2, b"r", b"\xff not an event"),
        record(3, b"r", *encode(other)),
        submitted(4, "r-2", None),
        submitted(5, "r-3", {"email": "not an address"}),
    ]
    await RequesterContacts(book)(batch)

    r1 = await book.get(ORG, "requester", "r-1")
    assert isinstance(r1, Reach) and r1.contact.email == "r1@example.org"
    assert await book.get(ORG, "requester", "r-2") is None  # known, nobody to tell
    assert not isinstance(await book.get(ORG, "requester", "r-3"), Reach)  # invalid: skipped
    for request_id in ("r-1", "r-2"):
        ttl = await redis.ttl(book.key(ORG, "requester", request_id))
        assert REQUESTER_TTL_S - 60 < ttl <= REQUESTER_TTL_S
    assert orjson.loads(await redis.get(book.key(ORG, "requester", "r-1")))["tz"] == "UTC"
