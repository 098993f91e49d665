"""CloudEvents 1.0 over Kafka: reads structured and binary mode, writes structured JSON."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
_REQUIRED = ("id", "source", "specversion", "type")
_CORE = frozenset(
    {"id", "source", "specversion", "type", "subject", "time", "datacontenttype", "dataschema"}
)
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
MAX_ATTRIBUTE_LENGTH = 1024

Headers = Iterable[tuple[str, bytes]] | Mapping[str, bytes]


class InvalidEvent(ValueError):
    """The bytes are not a usable CloudEvent; `code` is short, `detail` says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One CloudEvent; `data` is already decoded JSON (or raw bytes for non-JSON payloads)."""

    type: str
    source: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    subject: str | None = None
    time: str | None = None
    data: Any = None
    datacontenttype: str | None = "application/json"
    extensions: Mapping[str, str] = field(default_factory=dict)

    @property
    def dedupe_key(self) -> str:
        """The same source and id twice is one event."""
        return f"{self.source}\x1f{self.id}"

    def ext(self, name: str) -> str | None:
        return self.extensions.get(name)


_second: list[Any] = [-1, ""]  # the last whole second formatted, reused within it


def now_iso(at: float | None = None) -> str:
    """UTC now (or epoch seconds `at`) as RFC 3339 with milliseconds, e.g.
    2026-11-27T01:02:03.456Z (formatting the date once per second: this runs for every event
    published)."""
    now = time.time() if at is None else at
    second = int(now)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((now - second) * 1000):03d}Z"


def _header_map(headers: Headers | None) -> dict[str, bytes]:
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k.lower(): v for k, v in items}


def _text(name: str, raw: Any) -> str:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError as exc:
            raise InvalidEvent("bad-attribute", f"attribute {name!r} is not UTF-8") from exc
    if not isinstance(raw, str):
        raise InvalidEvent("bad-attribute", f"attribute {name!r} must be a string")
    if len(raw) > MAX_ATTRIBUTE_LENGTH:
        raise InvalidEvent(
            "bad-attribute", f"attribute {name!r} is longer than {MAX_ATTRIBUTE_LENGTH}"
        )
    return raw


def _build(attrs: Mapping[str, Any], data: Any) -> CloudEvent:
    for name in _REQUIRED:
        if name not in attrs or attrs[name] in (None, ""):
            raise InvalidEvent("missing-attribute", f"required attribute {name!r} is missing")
    values = {
        # a short str, as nearly every attribute is, needs no closer look
        k: v if type(v) is str and len(v) <= MAX_ATTRIBUTE_LENGTH else _text(k, v)
        for k, v in attrs.items()
        if v is not None
    }
    if values["specversion"] != "1.0":
        raise InvalidEvent("bad-specversion", f"specversion {values['specversion']!r} is not 1.0")
    extensions = {}
    for name, value in values.items():
        if name in _CORE:
            continue
        if not _EXTENSION_NAME.match(name):
            raise InvalidEvent(
                "bad-attribute", f"extension name {name[:40]!r} is not [a-z0-9]{{1,20}}"
            )
        extensions[name] = value
    return CloudEvent(
        type=values["type"],
        source=values["source"],
        id=values["id"],
        subject=values.get("subject"),
        time=values.get("time"),
        data=data,
        datacontenttype=values.get("datacontenttype"),
        extensions=extensions,
    )


def _json(raw: bytes, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("bad-json", f"{what} is not valid JSON: {exc}") from exc


def decode(value: bytes | None, headers: Headers | None = None) -> CloudEvent:
    """Decode a Kafka record as a CloudEvent in structured or binary content mode."""
    hdrs = _header_map(headers)
    content_type = hdrs.get("content-type", b"").decode("latin-1").lower()
    if "ce_specversion" in hdrs and not content_type.startswith(STRUCTURED_CONTENT_TYPE):
        attrs: dict[str, Any] = {k[3:]: v for k, v in hdrs.items() if k.startswith("ce_")}
        if content_type:
            attrs["datacontenttype"] = content_type
        if not value:  # binary mode writes an event without data as an empty value
            data = None
        elif not content_type or "json" in content_type:
            data = _json(value, "data")
        else:
            data = value
        return _build(attrs, data)
    if value is None:
        raise InvalidEvent("empty", "record has no value and no ce_ headers")
    body = _json(value, "structured event")
    if not isinstance(body, dict):
        raise InvalidEvent("bad-structure", "structured event must be a JSON object")
    if "data_base64" in body:
        raise InvalidEvent("unsupported-data", "data_base64 is not accepted; send JSON data")
    data = body.pop("data", None)
    return _build(body, data)


def encode(event: CloudEvent) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Encode as structured-mode JSON, returning (value, headers)."""
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    if event.subject is not None:
        body["subject"] = event.subject
    body["time"] = event.time or now_iso()
    if event.datacontenttype:
        body["datacontenttype"] = event.datacontenttype
    body.update(event.extensions)
    if event.data is not None:
        body["data"] = event.data
    return orjson.dumps(body), [("content-type", STRUCTURED_CONTENT_TYPE.encode())]


def to_json_bytes(event: CloudEvent) -> bytes:
    """The structured JSON body alone, e.g. for a webhook."""
    return encode(event)[0]
