"""Publishes notification.delivered / notification.failed: ids, attempts and timings, never a
contact detail. A report's id comes from what it reports, so a report repeated after a crash is
the same event to whoever reads {prefix}events."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from leanon_notification.contacts import Role
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent, now_iso

REPORT_NAMESPACE = uuid.UUID("0d6c0bb0-5d0c-4c64-8f1b-52a3c1f4a0e1")
PublishFn = Callable[[CloudEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Recipient:
    org: str
    role: Role
    id: str


@dataclass(frozen=True, slots=True)
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
        await self._publish(
            CloudEvent(
                type=kind,
                source=ev.SOURCE_NOTIFICATION,
                id=str(uuid.uuid5(REPORT_NAMESPACE, name)),
                subject=event.subject,
                time=now_iso(),
                data=data,
                extensions={ev.ORG_EXTENSION: to.org},
            )
        )
