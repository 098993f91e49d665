"""Kafka entry points for notification."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from leanon_notification import metrics
from leanon_notification.contacts import ContactBook, ContactChange
from leanon_shared import cloudevents
from leanon_shared import events as ev
from leanon_shared.models import Contact, HelperRecord

log = logging.getLogger(__name__)


class HelperContacts:
    """Helper contacts from the compacted helpers topic; a tombstone erases them."""

    def __init__(self, book: ContactBook) -> None:
        self.book = book

    async def __call__(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        changes: list[ContactChange] = []
        for record in records:
            org, _, helper_id = (record.key or b"").decode("utf-8", "replace").partition("/")
            if record.value is None:
                changes.append(ContactChange(org, "helper", helper_id, None))
                continue
            try:
                helper = HelperRecord.model_validate(orjson.loads(record.value))
            except (orjson.JSONDecodeError, ValidationError):
                log.error("skipping unreadable helper record at offset %s", record.offset)
                continue
            profile = helper.profile
            changes.append(
                ContactChange(
                    helper.org,
                    "helper",
                    helper.helper_id,
                    profile.contact,
                    profile.availability.timezone,
                )
            )
        await self.book.write(changes)
        erased = sum(1 for change in changes if change.contact is None)
        metrics.CONTACT_UPDATES.labels("erased").inc(erased)
        metrics.CONTACT_UPDATES.labels("helper").inc(len(changes) - erased)


class RequesterContacts:
    """Requester contacts from submissions on {prefix}requests."""

    def __init__(self, book: ContactBook) -> None:
        self.book = book

    async def __call__(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        changes: list[ContactChange] = []
        for record in records:
            try:
                command = cloudevents.decode(record.value, record.headers)
                if command.type != ev.REQUEST_SUBMITTED:
                    continue
                org = command.ext(ev.ORG_EXTENSION) or ""
                contact = command.data["request"].get("contact")
                request_id = command.data["request_id"]
                parsed = Contact.model_validate(contact) if contact else None
            except (cloudevents.InvalidEvent, ValidationError, KeyError, TypeError, AttributeError):
                continue  # matching dead-letters bad commands; nothing to remember here
            changes.append(ContactChange(org, "requester", request_id, parsed))
        await self.book.write(changes)
        metrics.CONTACT_UPDATES.labels("requester").inc(len(changes))
