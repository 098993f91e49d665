"""The same facts as a webhook's event, as an email a person can read. Pure."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from typing import Any

from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent

SUBJECTS = {
    ev.OFFER_CREATED: "New offer: can you help?",
    ev.OFFER_WITHDRAWN: "Offer withdrawn",
    ev.REQUEST_MATCHED: "Your request is matched",
    ev.REQUEST_UNMATCHED: "No helper found for your request",
    ev.REQUEST_EXPIRED: "Your request expired",
}


def _lines(event: CloudEvent) -> list[str]:
    d: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
    request = f"Request: {d.get('request_id')}"
    if event.type == ev.OFFER_CREATED:
        window = d.get("window") or {}
        skills = ", ".join(f"{k} (level {v})" for k, v in sorted((d.get("skills") or {}).items()))
        lines = [
            "You have been offered a request that fits your skills and time.",
            "",
            f"Offer: {d.get('offer_id')}",
            request,
            f"When: {window.get('start')} to {window.get('end')}",
            f"Skills: {skills}",
            f"Score: {d.get('score')}",
            f"Answer before: {d.get('expires_at')}",
        ]
        if d.get("description"):
            lines += ["", "Description:", str(d["description"])]
        return lines
    if event.type == ev.OFFER_WITHDRAWN:
        return [
            "An offer made to you is no longer open.",
            "",
            f"Offer: {d.get('offer_id')}",
            request,
            f"Reason: {d.get('reason')}",
        ]
    if event.type == ev.REQUEST_MATCHED:
        lines = ["Your request has all the helpers it needs.", "", request, "Helpers:"]
        for a in d.get("assignments") or []:
            lines.append(f"- helper {a.get('helper_id')} (offer {a.get('offer_id')})")
        return lines
    if event.type == ev.REQUEST_UNMATCHED:
        return [
            "No helper could be found for your request.",
            "",
            request,
            f"Why: {d.get('reason')}",
        ]
    if event.type == ev.REQUEST_EXPIRED:
        return ["Your request expired before it was matched.", "", request]
    return [request]


def render(event: CloudEvent, sender: str, to: str) -> EmailMessage:
    """A plain-text email; its Message-ID comes from the event, so a retry is the same mail."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = SUBJECTS.get(event.type, event.type)
    source = hashlib.sha256(event.source.encode()).hexdigest()[:12]
    message["Message-ID"] = f"<{event.id}.{source}@leanon>"
    message["X-LeanOn-Event-Id"] = event.id
    message["X-LeanOn-Event-Type"] = event.type
    footer = ["", "--", f"event {event.type} {event.id}"]
    message.set_content("\n".join([*_lines(event), *footer]) + "\n")
    return message
