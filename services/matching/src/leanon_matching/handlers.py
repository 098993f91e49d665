"""Kafka entry points for matching: thin, each record to one service call."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import orjson
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from leanon_matching import metrics
from leanon_matching.convert import Packed, helper_from_json, packed_from_json
from leanon_matching.domain.model import Helper
from leanon_matching.index import HelperIndex
from leanon_matching.service import Matcher
from leanon_shared import cloudevents
from leanon_shared import events as ev
from leanon_shared.kafka import EventBus

log = logging.getLogger(__name__)
T = TypeVar("T")
POISON = (cloudevents.InvalidEvent, ValidationError, KeyError, TypeError, ValueError)


class IndexHandler:
    """Keeps the Redis helper index in step with the compacted helpers topic."""

    def __init__(self, index: HelperIndex) -> None:
        self.index = index

    async def __call__(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        await self.index.apply(changes_from(records))
        metrics.INDEX_UPDATES.labels("applied").inc(len(records))


def changes_from(
    records: Iterable[ConsumerRecord[bytes, bytes]],
) -> list[tuple[str, str, Helper | None]]:
    """Helpers-topic records as index changes; a tombstone (no value) removes the helper."""
    return _helper_records(records, helper_from_json)


def packed_from(
    records: Iterable[ConsumerRecord[bytes, bytes]],
) -> list[tuple[str, str, Packed | None]]:
    """Helpers-topic records ready for a rebuild's bulk load (see changes_from)."""
    return _helper_records(records, packed_from_json)


def _helper_records(
    records: Iterable[ConsumerRecord[bytes, bytes]], convert: Callable[[Any], T]
) -> list[tuple[str, str, T | None]]:
    """(org, helper id, converted value or None for a tombstone); unreadable ones skipped."""
    out: list[tuple[str, str, T | None]] = []
    for record in records:
        org, _, helper_id = (record.key or b"").decode("utf-8", "replace").partition("/")
        if record.value is None:
            out.append((org, helper_id, None))
            continue
        try:
            out.append((org, helper_id, convert(orjson.loads(record.value))))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, struct.error) as exc:
            log.error(
                "skipping unreadable helper record at %s/%s: %s",
                record.partition,
                record.offset,
                type(exc).__name__,
            )
            metrics.INDEX_UPDATES.labels("unreadable").inc()
    return out


class CommandHandler:
    """Applies commands from {prefix}requests in order; a poison record goes to the DLQ."""

    def __init__(self, matcher: Matcher, bus: EventBus, dlq_topic: str) -> None:
        self.matcher = matcher
        self.bus = bus
        self.dlq_topic = dlq_topic

    async def __call__(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        pairs = []
        for record in records:
            try:
                pairs.append(
                    (record, self._check(cloudevents.decode(record.value, record.headers)))
                )
            except POISON as exc:
                await self._dead_letter(record, exc)
        try:
            with metrics.BATCH_SECONDS.time():
                await self.matcher.handle_batch([command for _, command in pairs])
        except POISON:
            # A command is bad in a way its envelope did not show: find it, one at a time
            # (applying a command twice is harmless: every step is idempotent).
            for record, command in pairs:
                try:
                    await self.matcher.handle(command)
                except POISON as exc:
                    await self._dead_letter(record, exc)
        await self.matcher.flush()

    @staticmethod
    def _check(command: cloudevents.CloudEvent) -> cloudevents.CloudEvent:
        if not isinstance(command.data, dict) and command.type != ev.REQUEST_CANCELLED:
            raise cloudevents.InvalidEvent("bad-data", "command data must be an object")
        return command

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        code = getattr(exc, "code", type(exc).__name__)
        log.error("dead-lettering command at %s/%s: %s", record.partition, record.offset, code)
        await self.bus.dead_letter(self.dlq_topic, record, code, str(exc))
        metrics.DEAD_LETTERS.inc()
