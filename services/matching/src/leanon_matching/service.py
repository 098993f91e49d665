"""Matching's application service: applies one command to one request and makes offers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent
from leanon_shared.models import RequestSubmission
from leanon_shared.offers import OfferRecord, OfferRecords

from leanon_matching import metrics
from leanon_matching.convert import request_from_submission
from leanon_matching.domain.eligibility import Check, check, explain
from leanon_matching.domain.lifecycle import Change, Offer, RequestState
from leanon_matching.domain.model import Request, Scored, Weights
from leanon_matching.domain.scoring import score
from leanon_matching.index import HelperIndex
from leanon_matching.reservations import Reservations
from leanon_matching.store import RequestStore, Timers

log = logging.getLogger(__name__)
OFFER_NAMESPACE = uuid.UUID("6b3c1f1e-8a57-4a53-9a35-3f0a4e9c2d10")


class EventSink(Protocol):
    async def __call__(self, events: list[CloudEvent]) -> None: ...


@dataclass(frozen=True, slots=True)
class MatchingConfig:
    offer_ttl_s: float = 120.0
    coverage_threshold: float = 1.0
    distance_scale_km: float = 10.0
    weights: Weights = field(default_factory=Weights)


class Matcher:
    """Commands in, the request's state moved, offers reserved, events out via an outbox.

    Call `handle` for each command of a batch, then `flush` once before committing offsets.
    """

    def __init__(
        self,
        *,
        index: HelperIndex,
        reservations: Reservations,
        offers: OfferRecords,
        store: RequestStore,
        timers: Timers,
        publish: EventSink,
        config: MatchingConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.index = index
        self.reservations = reservations
        self.offers = offers
        self.store = store
        self.timers = timers
        self.publish = publish
        self.config = config
        self.clock = clock
        self._dirty: dict[tuple[str, str], tuple[RequestState, dict[str, Any]]] = {}

    async def handle(self, command: CloudEvent) -> None:
        org = command.ext(ev.ORG_EXTENSION) or ""
        if command.type == ev.REQUEST_SUBMITTED:
            await self._submit(org, command)
            return
        request_id = (command.data or {}).get("request_id") or command.subject or ""
        loaded = await self.store.load(org, request_id)
        if loaded is None:
            log.warning("command %s for unknown request %s/%s", command.type, org, request_id)
            return
        state, raw = loaded
        request = self._request(org, raw)
        changes: list[Change] = []
        if command.type in ev.OFFER_ANSWERS:
            offer_id = command.data["offer_id"]
            changes = state.answer(offer_id, ev.OFFER_ANSWERS[command.type])
        elif command.type == ev.OFFER_TIMEOUT:
            changes = await self._time_out(state, command.data["offer_id"])
        elif command.type == ev.REQUEST_CANCELLED:
            changes = state.cancel()
        elif command.type == ev.REQUEST_EXPIRY:
            changes = state.expire()
        else:
            log.warning("unknown command type %s", command.type)
            return
        await self._release(org, state, changes)
        if any(
            c.type in (ev.OFFER_DECLINED_EVT, ev.OFFER_EXPIRED, ev.OFFER_DROPPED_EVT)
            for c in changes
        ):
            changes += await self._fill(state, request)
        await self._commit(state, raw, request, changes)

    # -- steps -----------------------------------------------------------------------------
    async def _submit(self, org: str, command: CloudEvent) -> None:
        data = command.data
        request_id, region = data["request_id"], data["region"]
        existing = await self.store.load(org, request_id)
        if existing is not None:  # a redelivery: publish whatever was not yet published
            state, raw = existing
            if raw.get("outbox"):
                self._dirty[(org, request_id)] = (state, raw)
            return
        sub = RequestSubmission.model_validate(data["request"])
        request = request_from_submission(org, request_id, region, sub)
        raw = {"request_id": request_id, "region": region, "submission": data["request"]}
        state = RequestState(org=org, request_id=request_id, helpers_needed=request.helpers_needed)
        changes = [Change(ev.REQUEST_ACCEPTED, {"helpers_needed": request.helpers_needed})]
        changes += await self._fill(state, request)
        await self.timers.schedule(
            {"kind": "expiry", "org": org, "request_id": request_id, "region": region},
            request.expires_at.timestamp(),
        )
        await self._commit(state, raw, request, changes)

    async def _fill(self, state: RequestState, request: Request) -> list[Change]:
        """Offer the best eligible helpers for every open slot; unmatched when none is left."""
        if state.open_slots == 0:
            return []
        helpers = await self.index.candidates(request)
        asked = state.asked
        checks = [
            (h, check(h, request, asked=asked, coverage_threshold=self.config.coverage_threshold))
            for h in helpers
        ]
        eligible = [(h, c) for h, c in checks if c.rejection is None]
        loads = await self.reservations.loads(
            request.org, [h.id for h, _ in eligible], request.window.start, request.window.end
        )
        ranked: list[Scored] = sorted(
            (
                score(
                    h,
                    request,
                    distance_km=c.distance_km,
                    coverage=c.coverage,
                    load=load,
                    weights=self.config.weights,
                    distance_scale_km=self.config.distance_scale_km,
                )
                for (h, c), load in zip(eligible, loads, strict=True)
                if load < h.capacity
            ),
            key=lambda s: (-s.score, s.helper.id),
        )
        changes: list[Change] = []
        now = self.clock()
        expires = min(now + timedelta(seconds=self.config.offer_ttl_s), request.expires_at)
        full = 0
        for candidate in ranked:
            if state.open_slots == 0:
                break
            offer_id = str(
                uuid.uuid5(OFFER_NAMESPACE, f"{request.org}/{request.id}/{candidate.helper.id}")
            )
            if not await self.reservations.reserve(
                request.org,
                candidate.helper.id,
                offer_id,
                request.window.start,
                request.window.end,
                candidate.helper.capacity,
                now,
            ):
                full += 1
                continue
            offer = Offer(
                offer_id,
                candidate.helper.id,
                "offered",
                candidate.score,
                candidate.breakdown,
                expires.isoformat(),
            )
            await self.offers.create(
                OfferRecord(
                    request.org,
                    offer_id,
                    request.id,
                    candidate.helper.id,
                    request.region,
                    "offered",
                )
            )
            await self.timers.schedule(
                {
                    "kind": "offer",
                    "org": request.org,
                    "request_id": request.id,
                    "region": request.region,
                    "offer_id": offer_id,
                },
                expires.timestamp(),
            )
            change = state.add_offer(offer)
            metrics.OFFERS.inc()
            change.data = self._offer_created(request, offer)
            changes.append(change)
        if state.open_slots > 0:
            rejected: list[Check] = [c for _, c in checks if c.rejection is not None]
            reason = explain(request, rejected, len(helpers))
            if full:
                reason += f"; {full} are fully booked at that time"
            settled = state.settle_after_search(reason)
            if settled:
                metrics.UNMATCHED.inc()
            changes += settled
        return changes

    async def _time_out(self, state: RequestState, offer_id: str) -> list[Change]:
        moved = await self.offers.move(state.org, offer_id, "expired")
        if moved in ("ok", "same"):
            return state.time_out(offer_id)
        if moved in ("accepted", "declined"):  # the answer won; its command may have been lost
            return state.answer(offer_id, moved)
        return []

    async def _release(self, org: str, state: RequestState, changes: list[Change]) -> None:
        for change in changes:
            for offer_id in change.release:
                offer = state.offers[offer_id]
                if change.type == ev.OFFER_WITHDRAWN:
                    await self.offers.move(org, offer_id, "withdrawn")
                await self.reservations.release(org, offer.helper_id, offer_id)

    async def _commit(
        self, state: RequestState, raw: dict[str, Any], request: Request, changes: list[Change]
    ) -> None:
        """Save the state with its outbox; `flush` publishes every outbox of the batch at once.

        The events keep their ids in the outbox, so a crash before the outbox is cleared means
        the same events are sent again, which receivers treat as one (CloudEvents source+id).
        """
        outbox = [
            *raw.get("outbox", []),
            *(self._event_dict(self._to_event(state, request, c)) for c in changes),
        ]
        raw = raw | {"outbox": outbox}
        await self.store.save(state, raw)
        if outbox:
            self._dirty[(state.org, state.request_id)] = (state, raw)

    async def flush(self) -> int:
        """Publish the outboxes of every request touched since the last flush, then clear them."""
        if not self._dirty:
            return 0
        dirty, self._dirty = self._dirty, {}
        events = [CloudEvent(**e) for _, raw in dirty.values() for e in raw["outbox"]]
        await self.publish(events)
        for state, raw in dirty.values():
            await self.store.save(state, raw | {"outbox": []})
        return len(events)

    # -- event shapes ----------------------------------------------------------------------
    def _request(self, org: str, raw: dict[str, Any]) -> Request:
        sub = RequestSubmission.model_validate(raw["submission"], context={"stored": True})
        return request_from_submission(org, raw["request_id"], raw["region"], sub)

    def _offer_created(self, request: Request, offer: Offer) -> dict[str, Any]:
        return {
            "offer_id": offer.offer_id,
            "helper_id": offer.helper_id,
            "score": offer.score,
            "breakdown": offer.breakdown,
            "window": {
                "start": request.window.start.isoformat(),
                "end": request.window.end.isoformat(),
            },
            "expires_at": offer.expires_at,
            "skills": request.skills,
            "description": request.description,
        }

    def _to_event(self, state: RequestState, request: Request, change: Change) -> CloudEvent:
        data = {"request_id": state.request_id, **change.data}
        if change.type in (
            ev.REQUEST_MATCHED,
            ev.REQUEST_UNMATCHED,
            ev.REQUEST_ACCEPTED,
            ev.REQUEST_EXPIRED,
            ev.REQUEST_CANCELLED_EVT,
        ):
            data["status"] = state.status
        return CloudEvent(
            type=change.type,
            source=ev.SOURCE_MATCHING,
            subject=state.request_id,
            data=data,
            extensions={ev.ORG_EXTENSION: state.org, "region": request.region},
        )

    @staticmethod
    def _event_dict(event: CloudEvent) -> dict[str, Any]:
        return {
            "type": event.type,
            "source": event.source,
            "id": event.id,
            "subject": event.subject,
            "time": event.time or datetime.now(UTC).isoformat(),
            "data": event.data,
            "extensions": dict(event.extensions),
        }
