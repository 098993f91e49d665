"""Kafka entry points for intake: CloudEvents from other systems, and the events read model."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import ValidationError

from leanon_intake import metrics
from leanon_intake.errors import IntakeError
from leanon_intake.readmodel import NewStatus, RequestStatuses, SeenEvents
from leanon_intake.service import Intake
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


def _subject(event: cloudevents.CloudEvent) -> str:
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(Identifier).validate_python(event.subject)
    except ValidationError as exc:
        raise Rejected("bad-subject", "subject must be an id of 1-128 [A-Za-z0-9._:-]") from exc


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
        for record in records:
            try:
                event: Any = cloudevents.decode(record.value, record.headers)
                org = event.ext(ev.ORG_EXTENSION) or ""
                if event.type == ev.REQUEST_SUBMITTED:
                    lane: object = (org, _submitted_id(event))
                    submitted.append((org, _submitted_id(event)))
                else:
                    lane = (org, event.subject or event.dedupe_key)
            except cloudevents.InvalidEvent as exc:
                event, lane = exc, record.key or id(record)
            lanes.setdefault(lane, []).append((record, event))
        # one round trip for the stored status of every submission in the batch
        known = dict(zip(submitted, await self.intake.statuses.get_many(submitted), strict=True))
        # A lane of one event writes its new status with everyone else's after the batch; a
        # longer lane writes at once, since its next event may need it.
        deferred: list[NewStatus] = []
        outcomes = await asyncio.gather(
            *(
                self._lane(items, known, deferred if len(items) == 1 else None)
                for items in lanes.values()
            ),
            return_exceptions=True,
        )
        # A failure that is not the event's fault (Redis or Kafka away) fails the whole batch,
        # which then comes again; every step is idempotent.
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        await self.intake.statuses.create_many(deferred)

    async def _lane(
        self,
        items: list[tuple[ConsumerRecord[bytes, bytes], Any]],
        known: Known,
        deferred: list[NewStatus] | None,
    ) -> None:
        for record, event in items:
            try:
                if isinstance(event, cloudevents.InvalidEvent):
                    raise event
                if await self.apply(event, known, deferred):
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
        self,
        event: cloudevents.CloudEvent,
        known: Known | None = None,
        deferred: list[NewStatus] | None = None,
    ) -> bool:
        """Apply one event; False when this source + id was applied before.

        `known` holds statuses read ahead for submissions; each is used once, since applying
        the submission changes it.
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
            default_id = _safe_id(f"{event.source}:{event.id}"[:128])
            submitted = await self.intake.submit_request(
                org, submission, submission.id or default_id
            )
            return submitted.created
        if await self.seen.seen(org, event.dedupe_key):
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
        await self.seen.mark(org, event.dedupe_key)
        return True


Known = dict[tuple[str, str], dict[str, Any] | None]


def _default_id(event: cloudevents.CloudEvent) -> str:
    """A submitted request's id when its data names none: the event's source + id."""
    return _safe_id(f"{event.source}:{event.id}"[:128])


def _submitted_id(event: cloudevents.CloudEvent) -> str:
    data = event.data if isinstance(event.data, dict) else {}
    chosen = data.get("id")
    return chosen if isinstance(chosen, str) and chosen else _default_id(event)


def _safe_id(raw: str) -> str:
    return "".join(c if c.isalnum() or c in "._:-" else "_" for c in raw)


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors()[:10]
    )


class StatusProjection:
    """Builds GET /v1/requests/{id} from {prefix}events."""

    def __init__(self, statuses: RequestStatuses) -> None:
        self.statuses = statuses

    async def __call__(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        events = []
        for record in records:
            try:
                events.append(cloudevents.decode(record.value, record.headers))
            except cloudevents.InvalidEvent as exc:
                log.error(
                    "unreadable event at %s/%s: %s", record.partition, record.offset, exc.code
                )
        await self.statuses.apply(events)
