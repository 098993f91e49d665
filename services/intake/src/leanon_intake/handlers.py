"""Kafka entry points for intake: CloudEvents from other systems, and the events read model."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import TypeAdapter, ValidationError

from leanon_intake import metrics
from leanon_intake.errors import IntakeError
from leanon_intake.readmodel import NewStatus, RequestStatuses, SeenEvents
from leanon_intake.service import UNKNOWN, Intake
from leanon_shared import cloudevents
from leanon_shared import events as ev
from leanon_shared.kafka import EventBus
from leanon_shared.models import HelperProfile, Identifier, RequestSubmission

log = logging.getLogger(__name__)


class Rejected(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


def _subject(event: cloudevents.CloudEvent) -> str:
    try:
        return _IDENTIFIER.validate_python(event.subject)
    except ValidationError as exc:
        raise Rejected("bad-subject", "subject must be an id of 1-128 [A-Za-z0-9._:-]") from exc


@dataclass(slots=True)
class Batch:
    """What a batch of CloudEvents read ahead, and the writes it leaves for its end.

    `known` holds the stored status of each submission (used once: applying the submission
    changes it); `seen` the dedupe keys applied before or earlier in this batch; `marks` the
    keys applied now, and `statuses` the new requests' statuses, written in one round trip
    each once the batch's commands are published.
    """

    known: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set)
    marks: list[tuple[str, str]] = field(default_factory=list)
    statuses: list[NewStatus] = field(default_factory=list)


class IntakeEvents:
    """CloudEvents published by other systems on {prefix}intake; rejects go to the DLQ.

    Events about one subject keep their order; events about different subjects in a batch are
    applied concurrently. The same `source` + `id` twice is applied once.
    """

    def __init__(
        self,
        intake: Intake,
        bus: EventBus,
        dlq_topic: str,
        known_orgs: frozenset[str],
        seen: SeenEvents,
    ) -> None:
        self.intake = intake
        self.bus = bus
        self.dlq_topic = dlq_topic
        self.known_orgs = known_orgs
        self.seen = seen

    async def __call__(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        lanes: dict[object, list[tuple[ConsumerRecord[bytes, bytes], Any]]] = {}
        submitted: list[tuple[str, str]] = []
        others: list[tuple[str, str]] = []
        for record in records:
            try:
                event: Any = cloudevents.decode(record.value, record.headers)
                org = event.ext(ev.ORG_EXTENSION) or ""
                if event.type == ev.REQUEST_SUBMITTED:
                    lane: object = (org, _submitted_id(event))
                    submitted.append((org, _submitted_id(event)))
                else:
                    lane = (org, event.subject or event.dedupe_key)
                    others.append((org, event.dedupe_key))
            except cloudevents.InvalidEvent as exc:
                event, lane = exc, record.key or id(record)
            lanes.setdefault(lane, []).append((record, event))
        # one round trip each for the stored status of every submission and for which of the
        # other events were applied before
        statuses, seen = await asyncio.gather(
            self.intake.statuses.get_many(submitted), self.seen.seen_many(others)
        )
        batch = Batch(
            known=dict(zip(submitted, statuses, strict=True)),
            seen={key for key, was in zip(others, seen, strict=True) if was},
        )
        try:
            outcomes = await asyncio.gather(
                *(self._lane(items, batch, single=len(items) == 1) for items in lanes.values()),
                return_exceptions=True,
            )
        finally:
            # what was applied is recorded even when another lane failed: the batch comes
            # again, and these need not be applied twice
            await asyncio.gather(
                self.intake.statuses.create_many(batch.statuses), self.seen.mark_many(batch.marks)
            )
        # A failure that is not the event's fault (Redis or Kafka away) fails the whole batch,
        # which then comes again; every step is idempotent.
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _lane(
        self, items: list[tuple[ConsumerRecord[bytes, bytes], Any]], batch: Batch, single: bool
    ) -> None:
        for record, event in items:
            try:
                if isinstance(event, cloudevents.InvalidEvent):
                    raise event
                if await self.apply(event, batch, single):
                    metrics.INGESTED.labels("ok").inc()
                else:
                    metrics.INGESTED.labels("duplicate").inc()
            except (cloudevents.InvalidEvent, Rejected) as exc:
                await self._reject(record, exc.code, exc.detail)
            except ValidationError as exc:
                await self._reject(record, "invalid-data", _summary(exc))
            except IntakeError as exc:
                await self._reject(record, exc.code, exc.detail)

    async def _reject(self, record: ConsumerRecord[bytes, bytes], code: str, detail: str) -> None:
        metrics.INGESTED.labels("rejected").inc()
        metrics.REJECTED.labels(code).inc()
        await self.bus.dead_letter(self.dlq_topic, record, code, detail)

    async def apply(
        self, event: cloudevents.CloudEvent, batch: Batch | None = None, single: bool = False
    ) -> bool:
        """Apply one event; False when this source + id was applied before.

        With a `batch`, reads come from what it read ahead and the final writes are left to
        it; `single` says no later event in the batch is about the same subject, so even a
        new request's status can wait for the batch's end.
        """
        org = event.ext(ev.ORG_EXTENSION)
        if not org:
            raise Rejected("missing-orgid", "extension attribute orgid is required")
        if org not in self.known_orgs:
            raise Rejected("unknown-org", f"orgid {org[:64]!r} is not a known org")
        if event.type not in ev.INTAKE_TYPES:
            raise Rejected("unknown-type", f"type {event.type[:100]!r} is not accepted")
        data = event.data if isinstance(event.data, dict) else None
        if event.type == ev.REQUEST_SUBMITTED:
            # The request id (default: source + id) is the dedupe key already.
            submission = RequestSubmission.model_validate(data)
            request_id = submission.id or _default_id(event)
            known = batch.known.pop((org, request_id), UNKNOWN) if batch else UNKNOWN
            submitted = await self.intake.submit_request(
                org,
                submission,
                request_id,
                known=known,
                deferred=batch.statuses if batch and single else None,
            )
            return submitted.created
        key = (org, event.dedupe_key)
        if batch is not None and key in batch.seen:
            return False
        if batch is None and await self.seen.seen(org, event.dedupe_key):
            return False
        if event.type == ev.HELPER_UPSERTED:
            await self.intake.upsert_helper(
                org, _subject(event), HelperProfile.model_validate(data)
            )
        elif event.type == ev.HELPER_REMOVED:
            await self.intake.remove_helper(org, _subject(event))
        elif event.type == ev.REQUEST_CANCELLED:
            await self.intake.cancel_request(org, _subject(event))
        else:
            await self.intake.answer_offer(org, _subject(event), ev.OFFER_ANSWERS[event.type])
        if batch is None:
            await self.seen.mark_many([key])
        else:
            batch.seen.add(key)
            batch.marks.append(key)
        return True


def _default_id(event: cloudevents.CloudEvent) -> str:
    """A submitted request's id when its data names none: the event's source + id."""
    return _safe_id(f"{event.source}:{event.id}"[:128])


def _submitted_id(event: cloudevents.CloudEvent) -> str:
    data = event.data if isinstance(event.data, dict) else {}
    chosen = data.get("id")
    return chosen if isinstance(chosen, str) and chosen else _default_id(event)


_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


def _safe_id(raw: str) -> str:
    return _UNSAFE.sub("_", raw)


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors()[:10]
    )


class StatusProjection:
    """Builds GET /v1/requests/{id} from {prefix}events."""

    def __init__(self, statuses: RequestStatuses) -> None:
        self.statuses = statuses

    async def __call__(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        await self.statuses.apply(_readable([r for r in records if _may_move_a_status(r)]))


def _may_move_a_status(record: ConsumerRecord[bytes, bytes]) -> bool:
    """False for a record whose `ce_type` header (notification's reports carry one, a third
    of the events topic) names a type no status folds in: it is skipped without parsing."""
    for name, value in record.headers:
        if name == "ce_type":
            return value.decode("utf-8", "replace") in RequestStatuses.FOLDED
    return True


class SubmissionReplay:
    """Puts back, when Redis lost the statuses, what only {prefix}requests holds: each
    accepted submission's fingerprint (see RequestStatuses.remember_submissions)."""

    def __init__(self, statuses: RequestStatuses) -> None:
        self.statuses = statuses

    async def __call__(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        await self.statuses.remember_submissions(_readable(records))


def _readable(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[cloudevents.CloudEvent]:
    """The records' CloudEvents; one that cannot be read is logged and left out."""
    events = []
    for record in records:
        try:
            events.append(cloudevents.decode(record.value, record.headers))
        except cloudevents.InvalidEvent as exc:
            log.error("unreadable event at %s/%s: %s", record.partition, record.offset, exc.code)
    return events
