"""Kafka entry points for matching: thin, each record to one service call."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
from aiokafka import ConsumerRecord
from leanon_shared import cloudevents
from leanon_shared.kafka import EventBus
from leanon_shared.models import HelperRecord
from pydantic import ValidationError

from leanon_matching import metrics
from leanon_matching.convert import helper_from_record
from leanon_matching.index import HelperIndex
from leanon_matching.service import Matcher

log = logging.getLogger(__name__)
POISON = (cloudevents.InvalidEvent, ValidationError, KeyError, TypeError, ValueError)


class IndexHandler:
    """Keeps the Redis helper index in step with the compacted helpers topic."""

    def __init__(self, index: HelperIndex) -> None:
        self.index = index

    async def __call__(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            if record.value is None:
                org, _, helper_id = (record.key or b"").decode().partition("/")
                await self.index.remove(org, helper_id)
                metrics.INDEX_UPDATES.labels("removed").inc()
                continue
            try:
                helper = helper_from_record(HelperRecord.model_validate(orjson.loads(record.value)))
            except (orjson.JSONDecodeError, ValidationError) as exc:
                log.error(
                    "skipping unreadable helper record at offset %s: %s",
                    record.offset,
                    type(exc).__name__,
                )
                metrics.INDEX_UPDATES.labels("unreadable").inc()
                continue
            await self.index.upsert(helper)
            metrics.INDEX_UPDATES.labels("upserted").inc()


class CommandHandler:
    """Applies commands from {prefix}requests in order; a poison record goes to the DLQ."""

    def __init__(self, matcher: Matcher, bus: EventBus, dlq_topic: str) -> None:
        self.matcher = matcher
        self.bus = bus
        self.dlq_topic = dlq_topic

    async def __call__(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            try:
                command = cloudevents.decode(record.value, record.headers)
                with metrics.COMMAND_SECONDS.labels(command.type).time():
                    await self.matcher.handle(command)
            except POISON as exc:
                code = getattr(exc, "code", type(exc).__name__)
                log.error(
                    "dead-lettering command at %s/%s: %s", record.partition, record.offset, code
                )
                await self.bus.dead_letter(self.dlq_topic, record, code, str(exc))
                metrics.DEAD_LETTERS.inc()
        await self.matcher.flush()
