"""Who hears what, exactly once as they can tell: lifecycle events to signed webhooks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from leanon_notification import metrics
from leanon_notification.contacts import ContactBook, Role, Unknown
from leanon_notification.webhooks import WebhookSender
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent, now_iso, to_json_bytes
from leanon_shared.models import Contact

log = logging.getLogger(__name__)
HELPER_TYPES = frozenset({ev.OFFER_CREATED, ev.OFFER_WITHDRAWN})
REQUESTER_TYPES = frozenset({ev.REQUEST_MATCHED, ev.REQUEST_UNMATCHED, ev.REQUEST_EXPIRED})
SENT_TTL_S = 7 * 24 * 3600
CONTACT_WAIT_S = 5.0
PublishFn = Callable[[CloudEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Recipient:
    org: str
    role: Role
    id: str


def recipient_of(event: CloudEvent) -> Recipient | None:
    org = event.ext(ev.ORG_EXTENSION)
    data = event.data if isinstance(event.data, dict) else {}
    if org is None:
        return None
    if event.type in HELPER_TYPES and data.get("helper_id"):
        return Recipient(org, "helper", str(data["helper_id"]))
    if event.type in REQUESTER_TYPES and data.get("request_id"):
        return Recipient(org, "requester", str(data["request_id"]))
    return None


class Dispatcher:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        contacts: ContactBook,
        webhooks: WebhookSender,
        report: Reporter,
        max_in_flight: int,
    ) -> None:
        self._r = redis
        self._p = prefix
        self.contacts = contacts
        self.webhooks = webhooks
        self.report = report
        self._slots = asyncio.Semaphore(max_in_flight)

    def _sent_key(self, event: CloudEvent, to: Recipient) -> str:
        return f"{self._p}sent:{to.org}:{event.source}:{event.id}:{to.role}:{to.id}"

    async def deliver_all(self, events: list[CloudEvent]) -> None:
        """Deliver a batch concurrently; one slow endpoint holds only its own slot."""
        await asyncio.gather(*(self.deliver(e) for e in events))

    async def deliver(self, event: CloudEvent) -> None:
        to = recipient_of(event)
        if to is None:
            return
        sent_key = self._sent_key(event, to)
        if await self._r.exists(sent_key):
            metrics.DUPLICATES_SKIPPED.inc()
            return
        contact = await self._contact(to)
        if contact is None or not contact.webhook_url:
            return  # nobody to tell by webhook (email arrives with its own issue)
        body = to_json_bytes(event)
        started = time.perf_counter()
        async with self._slots:
            outcome = await self.webhooks.send(contact.webhook_url, body)
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        metrics.DELIVERIES.labels("webhook", "delivered" if outcome.delivered else "failed").inc()
        if outcome.delivered:
            await self._r.set(sent_key, b"1", ex=SENT_TTL_S)
        await self.report(event, to, outcome.delivered, outcome.detail, latency_ms)

    async def _contact(self, to: Recipient) -> Contact | None:
        """The contacts consumer may still be a moment behind the events: wait, bounded."""
        deadline = time.monotonic() + CONTACT_WAIT_S
        while True:
            contact = await self.contacts.get(to.org, to.role, to.id)
            if not isinstance(contact, Unknown):
                return contact
            if time.monotonic() > deadline:
                raise ContactNotYetKnown(f"no contact record yet for {to.role} {to.id}")
            await asyncio.sleep(0.05)


class ContactNotYetKnown(RuntimeError):
    """Retryable: raising it rewinds the batch, so the event comes again."""


class Reporter:
    """Publishes notification.delivered / notification.failed: ids and timings, no contacts."""

    def __init__(self, publish: PublishFn) -> None:
        self._publish = publish

    async def __call__(
        self, event: CloudEvent, to: Recipient, delivered: bool, detail: str, latency_ms: float
    ) -> None:
        data = {
            "request_id": (event.data or {}).get("request_id", event.subject),
            "event_id": event.id,
            "event_type": event.type,
            "recipient": {"role": to.role, "id": to.id},
            "channel": "webhook",
            "attempts": 1,
            "latency_ms": latency_ms,
        }
        if not delivered:
            data["reason"] = detail
        report = CloudEvent(
            type=ev.NOTIFICATION_DELIVERED if delivered else ev.NOTIFICATION_FAILED,
            source=ev.SOURCE_NOTIFICATION,
            subject=event.subject,
            time=now_iso(),
            data=data,
            extensions={ev.ORG_EXTENSION: to.org},
        )
        await self._publish(report)
