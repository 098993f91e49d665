"""Publishes notification.delivered / notification.failed: ids, attempts and timings, never a
contact detail. A report's id comes from what it reports, so a report repeated after a crash is
the same event to whoever reads {prefix}events.

Reports are structured CloudEvents like every other event, with one more Kafka header,
`ce_type`, so that a consumer of {prefix}events (this service among them: it reads its own
reports back) can pass over them without parsing the JSON."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from leanon_notification.contacts import Role
from leanon_shared import events as ev
from leanon_shared.cloudevents import STRUCTURED_CONTENT_TYPE, CloudEvent, now_iso

REPORT_NAMESPACE = uuid.UUID("0d6c0bb0-5d0c-4c64-8f1b-52a3c1f4a0e1")
TYPE_HEADER = "ce_type"
# value, key, headers
PublishFn = Callable[[bytes, bytes | None, Sequence[tuple[str, bytes]]], Awaitable[None]]


@dataclass(slots=True)  # not frozen: one per delivery (see dispatcher.Attempt)
class Recipient:
    org: str
    role: Role
    id: str


@dataclass(slots=True)  # not frozen: one per delivery (see dispatcher.Attempt)
class Report:
    delivered: bool
    channel: str  # webhook, email, or none (held back before any channel)
    attempts: int
    latency_ms: float
    reason: str = ""
    status: int | None = None
    held: bool = False

    def as_dict(self) -> dict[str, Any]:
        """For keeping in Redis until published (dataclasses.asdict is slow on a hot path)."""
        return {
            "delivered": self.delivered,
            "channel": self.channel,
            "attempts": self.attempts,
            "latency_ms": self.latency_ms,
            "reason": self.reason,
            "status": self.status,
            "held": self.held,
        }


class Reporter:
    def __init__(self, publish: PublishFn) -> None:
        self._publish = publish

    async def __call__(self, event: CloudEvent, to: Recipient, report: Report) -> None:
        source = event.data if isinstance(event.data, dict) else {}
        data: dict[str, Any] = {
            "request_id": source.get("request_id", event.subject),
            "event_id": event.id,
            "event_type": event.type,
            "recipient": {"role": to.role, "id": to.id},
            "channel": report.channel,
            "attempts": report.attempts,
            "latency_ms": report.latency_ms,
        }
        if "offer_id" in source:
            data["offer_id"] = source["offer_id"]
        if report.status is not None:
            data["status"] = report.status
        if not report.delivered:
            data["reason"] = report.reason
        if report.held:
            data["held"] = True
        kind = ev.NOTIFICATION_DELIVERED if report.delivered else ev.NOTIFICATION_FAILED
        name = f"{event.source}|{event.id}|{to.role}|{to.id}|{report.channel}|{kind}"
        # The structured event `encode` would write, built straight (no CloudEvent on the way).
        body: dict[str, Any] = {
            "specversion": "1.0",
            "id": report_id(name),
            "source": ev.SOURCE_NOTIFICATION,
            "type": kind,
        }
        if event.subject is not None:
            body["subject"] = event.subject
        body["time"] = now_iso()
        body["datacontenttype"] = "application/json"
        body[ev.ORG_EXTENSION] = to.org
        body["data"] = data
        headers = [_CONTENT_TYPE, _TYPE_HEADERS[kind]]
        key = event.subject.encode() if event.subject is not None else None
        await self._publish(orjson.dumps(body), key, headers)


_CONTENT_TYPE = ("content-type", STRUCTURED_CONTENT_TYPE.encode())
_TYPE_HEADERS = {
    kind: (TYPE_HEADER, kind.encode())
    for kind in (ev.NOTIFICATION_DELIVERED, ev.NOTIFICATION_FAILED)
}


def report_id(name: str) -> str:
    """uuid5(REPORT_NAMESPACE, name) as text, without building UUID objects (a third of a
    report's cost)."""
    digest = bytearray(hashlib.sha1(REPORT_NAMESPACE.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
