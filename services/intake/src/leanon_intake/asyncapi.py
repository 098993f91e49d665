"""The AsyncAPI 3.0 document of LeanOn's Kafka side, served at /asyncapi.

Built from the same pydantic models that validate the events, so it cannot drift from what
intake accepts.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from leanon_shared import events as ev
from leanon_shared.models import ID_PATTERN, HelperProfile, RequestSubmission
from leanon_shared.topics import Topics

REF = "#/components/schemas/{model}"
SUBJECT_IS = {
    ev.HELPER_UPSERTED: "the helper id",
    ev.HELPER_REMOVED: "the helper id",
    ev.REQUEST_CANCELLED: "the request id",
    ev.OFFER_ACCEPTED: "the offer id",
    ev.OFFER_DECLINED: "the offer id",
    ev.OFFER_DROPPED: "the offer id",
}
DATA_OF = {ev.HELPER_UPSERTED: "HelperProfile", ev.REQUEST_SUBMITTED: "RequestSubmission"}
OUT_TYPES = (
    ev.REQUEST_ACCEPTED,
    ev.OFFER_CREATED,
    ev.OFFER_ACCEPTED_EVT,
    ev.OFFER_DECLINED_EVT,
    ev.OFFER_EXPIRED,
    ev.OFFER_WITHDRAWN,
    ev.OFFER_DROPPED_EVT,
    ev.REQUEST_MATCHED,
    ev.REQUEST_UNMATCHED,
    ev.REQUEST_EXPIRED,
    ev.REQUEST_CANCELLED_EVT,
    ev.NOTIFICATION_DELIVERED,
    ev.NOTIFICATION_FAILED,
)


def _envelope(type_: str, data: dict[str, Any] | None, subject: str | None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "specversion": {"const": "1.0"},
        "type": {"const": type_},
        "source": {"type": "string", "minLength": 1, "maxLength": 1024},
        "id": {"type": "string", "minLength": 1, "maxLength": 1024},
        "orgid": {"type": "string", "description": "the org; must be a known org"},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"const": "application/json"},
    }
    required = ["specversion", "type", "source", "id", "orgid"]
    if subject:
        properties["subject"] = {
            "type": "string",
            "pattern": ID_PATTERN,
            "description": subject,
        }
        required.append("subject")
    if data is not None:
        properties["data"] = data
        required.append("data")
    return {"type": "object", "properties": properties, "required": required}


def _name(type_: str) -> str:
    return type_.removeprefix("org.leanon.").replace(".", "_")


def document(topics: Topics, bootstrap: str) -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(HelperProfile, "validation"), (RequestSubmission, "validation")], ref_template=REF
    )
    messages: dict[str, Any] = {}
    for type_ in sorted(ev.INTAKE_TYPES):
        data = {"$ref": REF.format(model=DATA_OF[type_])} if type_ in DATA_OF else None
        messages[_name(type_)] = {
            "name": type_,
            "contentType": "application/cloudevents+json",
            "summary": f"{type_}; structured mode, or binary mode with ce_* headers",
            "payload": _envelope(type_, data, SUBJECT_IS.get(type_)),
        }
    for type_ in OUT_TYPES:
        messages[f"out_{_name(type_)}"] = {
            "name": type_,
            "contentType": "application/cloudevents+json",
            "summary": f"{type_}, keyed by request id; never carries contact details",
            "payload": _envelope(type_, {"type": "object"}, None),
        }
    intake_refs = {_name(t): {"$ref": f"#/components/messages/{_name(t)}"} for t in ev.INTAKE_TYPES}
    out_refs = {
        f"out_{_name(t)}": {"$ref": f"#/components/messages/out_{_name(t)}"} for t in OUT_TYPES
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "LeanOn",
            "version": "1",
            "description": "CloudEvents 1.0 in and out over Kafka. The extension attribute "
            "`orgid` names the org. The same `source` + `id` twice is one event.",
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {"kafka": {"host": bootstrap, "protocol": "kafka"}},
        "channels": {
            "intake": {
                "address": topics.intake,
                "description": "What other systems send LeanOn.",
                "messages": intake_refs,
            },
            "intakeDlq": {
                "address": topics.intake_dlq,
                "description": "Rejected input: the original key, value and headers, plus "
                "`x-leanon-error` (a short code) and `x-leanon-error-detail`.",
            },
            "events": {
                "address": topics.events,
                "description": "Every lifecycle change, keyed by request id.",
                "messages": out_refs,
            },
        },
        "operations": {
            "submit": {
                "action": "receive",
                "channel": {"$ref": "#/channels/intake"},
                "summary": "LeanOn consumes helper, request and offer events.",
            },
            "rejected": {
                "action": "send",
                "channel": {"$ref": "#/channels/intakeDlq"},
                "summary": "LeanOn dead-letters what it cannot accept, with the reason.",
            },
            "lifecycle": {
                "action": "send",
                "channel": {"$ref": "#/channels/events"},
                "summary": "LeanOn publishes every lifecycle change.",
            },
        },
        "components": {"schemas": schemas["$defs"], "messages": messages},
    }
