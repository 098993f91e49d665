"""Matching's application service: applies commands to requests and makes the best offers.

`handle_batch` takes the commands of one consumer batch: its submissions are assigned jointly
(see domain/assignment.py), then every other command is applied, in order per request and
concurrently across requests. Redis is read and written a batch at a time. Each request's state
is saved with an outbox of the events it produced; `flush` publishes all outboxes of the batch
at once and then clears them, before offsets are committed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from leanon_matching import metrics
from leanon_matching.convert import request_from_submission
from leanon_matching.domain.assignment import Need, assign
from leanon_matching.domain.eligibility import Check, Rejection, check, explain
from leanon_matching.domain.lifecycle import Change, Offer, RequestState
from leanon_matching.domain.model import Request, Scored, Weights
from leanon_matching.domain.scoring import score
from leanon_matching.index import HelperIndex
from leanon_matching.reservations import Hold, Reservations
from leanon_matching.store import Loaded, RequestStore, Timers
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent
from leanon_shared.models import RequestSubmission
from leanon_shared.offers import OfferRecord, OfferRecords

log = logging.getLogger(__name__)
OFFER_NAMESPACE = uuid.UUID("6b3c1f1e-8a57-4a53-9a35-3f0a4e9c2d10")
LANES = 32  # requests whose commands are applied at once within a batch
RE_OFFER = frozenset({ev.OFFER_DECLINED_EVT, ev.OFFER_EXPIRED, ev.OFFER_DROPPED_EVT})


class EventSink(Protocol):
    async def __call__(self, events: list[CloudEvent]) -> None: ...


@dataclass(frozen=True, slots=True)
class MatchingConfig:
    offer_ttl_s: float = 120.0
    coverage_threshold: float = 1.0
    distance_scale_km: float = 10.0
    recent_scale: float = 5.0
    weights: Weights = field(default_factory=Weights)
    critical_fanout: int = 3
    joint_assignment: bool = True


@dataclass(slots=True)
class Ranking:
    """Eligible helpers best first (with how many they already hold), and who was ruled out."""

    ranked: list[Scored]
    rejected: list[Check]
    examined: int
    remaining: dict[str, int]


@dataclass(slots=True)
class Open:
    """A request being worked on within a batch."""

    state: RequestState
    raw: dict[str, Any]
    request: Request
    changes: list[Change] = field(default_factory=list)


class Matcher:
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
        self._dirty: dict[tuple[str, str], Loaded] = {}
        self._loaded: dict[tuple[str, str], Loaded | None] = {}
        self._unsaved: dict[tuple[str, str], Loaded] | None = None  # saved at a batch's end
        self._concurrency = asyncio.Semaphore(LANES)

    # -- entry points ----------------------------------------------------------------------
    async def handle_batch(self, commands: Sequence[CloudEvent]) -> None:
        """Apply a consumer batch: its submissions are assigned together, then the other
        commands are applied, in order per request and concurrently across requests.

        Every request the batch names is read in one round trip first; what a command
        changes is saved before the next command on that request reads it.
        """
        keys = {_key(command) for command in commands}
        self._loaded = await self.store.load_many(keys)
        self._unsaved = {}
        try:
            submissions = [c for c in commands if c.type == ev.REQUEST_SUBMITTED]
            lanes: dict[tuple[str, str], list[CloudEvent]] = {}
            for command in commands:
                if command.type != ev.REQUEST_SUBMITTED:
                    lanes.setdefault(_key(command), []).append(command)
            try:
                if submissions:
                    await self._submit_all(submissions)
                await _all(self._lane(lane) for lane in lanes.values())
            finally:
                # what the batch changed, saved in one round trip; also when a command failed,
                # since the offers and reservations of the others are made already
                await self.store.save_many(self._unsaved.values())
        finally:
            self._loaded, self._unsaved = {}, None

    async def _lane(self, commands: list[CloudEvent]) -> None:
        async with self._concurrency:
            for command in commands:
                await self.handle(command)

    async def handle(self, command: CloudEvent) -> None:
        if command.type == ev.REQUEST_SUBMITTED:
            await self._submit_all([command])
            return
        org, request_id = _key(command)
        loaded = await self._load(org, request_id)
        if loaded is None:
            log.warning("command %s for unknown request %s/%s", command.type, org, request_id)
            return
        state, raw = loaded
        work = Open(state, raw, self._request(org, raw))
        if command.type in ev.OFFER_ANSWERS:
            work.changes = state.answer(command.data["offer_id"], ev.OFFER_ANSWERS[command.type])
            if reason := command.data.get("reason"):  # e.g. notification held the offer back
                for change in work.changes:
                    change.data.setdefault("reason", str(reason)[:300])
        elif command.type == ev.OFFER_TIMEOUT:
            work.changes = await self._time_out(state, command.data["offer_id"])
        elif command.type == ev.REQUEST_CANCELLED:
            work.changes = state.cancel()
        elif command.type == ev.REQUEST_EXPIRY:
            work.changes = state.expire()
        else:
            log.warning("unknown command type %s", command.type)
            return
        await self._release(org, state, work.changes)
        if any(c.type in RE_OFFER for c in work.changes):
            await self._offer([work])
        await self._commit([work])

    async def flush(self) -> int:
        """Publish the outboxes of every request touched since the last flush, then clear them.

        Events keep their ids in the outbox, so a crash before the outbox is cleared sends the
        same events again, which receivers treat as one (CloudEvents source + id).
        """
        if not self._dirty:
            return 0
        dirty, self._dirty = self._dirty, {}
        events = [CloudEvent(**e) for _, raw in dirty.values() for e in raw["outbox"]]
        await self.publish(events)
        await self.store.save_many((state, raw | {"outbox": []}) for state, raw in dirty.values())
        return len(events)

    async def _load(self, org: str, request_id: str) -> Loaded | None:
        """The request as this batch last saw it (read ahead by handle_batch), else Redis."""
        if (org, request_id) in self._loaded:
            return self._loaded[(org, request_id)]
        return await self.store.load(org, request_id)

    # -- ranking ---------------------------------------------------------------------------
    async def rank(self, request: Request, asked: frozenset[str] = frozenset()) -> Ranking:
        """Candidates from the index, the hard constraints, then the score: best first."""
        found = await self.index.candidates(
            request,
            loads=self.reservations.load_query(request.org, self.clock()),
            coverage_threshold=self.config.coverage_threshold,
        )
        ranked, remaining, full = [], {}, 0
        rejected: list[Check] = []
        for candidate in found:
            h = candidate.helper
            c = check(h, request, asked=asked, coverage_threshold=self.config.coverage_threshold)
            if c.rejection is not None:
                rejected.append(c)
                continue
            if candidate.load >= h.capacity:
                full += 1
                continue
            remaining[h.id] = h.capacity - candidate.load
            ranked.append(
                score(
                    h,
                    request,
                    distance_km=c.distance_km,
                    coverage=c.coverage,
                    load=candidate.load,
                    weights=self.config.weights,
                    distance_scale_km=self.config.distance_scale_km,
                    recent=candidate.recent,
                    recent_scale=self.config.recent_scale,
                )
            )
        ranked.sort(key=lambda s: (-s.score, s.helper.id))
        rejected += [Check(Rejection.CAPACITY)] * full
        return Ranking(ranked, rejected + found.ruled_out, found.examined, remaining)

    def wanted(self, state: RequestState, request: Request) -> int:
        """Offers to make now: one per open slot, k per slot for critical requests (fan-out)."""
        fanout = self.config.critical_fanout if request.urgency == "critical" else 1
        missing = state.helpers_needed - len(state.accepted)
        if state.status in ("unmatched", "expired", "cancelled") or missing <= 0:
            return 0
        return max(0, missing * fanout - len(state.open_offers))

    # -- steps -----------------------------------------------------------------------------
    async def _submit_all(self, commands: list[CloudEvent]) -> None:
        work: list[Open] = []
        expiries: list[tuple[dict[str, str], float]] = []
        seen: set[tuple[str, str]] = set()
        for command in commands:
            org = command.ext(ev.ORG_EXTENSION) or ""
            data = command.data
            request_id, region = data["request_id"], data["region"]
            if (org, request_id) in seen:
                continue
            seen.add((org, request_id))
            existing = await self._load(org, request_id)
            if existing is not None:  # a redelivery: publish whatever is still in the outbox
                state, raw = existing
                if raw.get("outbox"):
                    self._dirty[(org, request_id)] = (state, raw)
                continue
            sub = RequestSubmission.model_validate(data["request"])
            request = request_from_submission(org, request_id, region, sub)
            raw = {"request_id": request_id, "region": region, "submission": data["request"]}
            state = RequestState(
                org=org, request_id=request_id, helpers_needed=request.helpers_needed
            )
            accepted = Change(ev.REQUEST_ACCEPTED, {"helpers_needed": request.helpers_needed})
            work.append(Open(state, raw, request, [accepted]))
            expiries.append(
                (
                    {"kind": "expiry", "org": org, "request_id": request_id, "region": region},
                    request.expires_at.timestamp(),
                )
            )
        await self.timers.schedule_many(expiries)
        await self._offer(work)
        await self._commit(work)

    async def _offer(self, work: list[Open]) -> None:
        """Rank candidates for each request, assign them jointly, reserve, make offers."""
        rankings = list(
            await asyncio.gather(*(self.rank(item.request, item.state.asked) for item in work))
        )
        needs: list[Need] = []
        remaining: dict[str, int] = {}
        for item, ranking in zip(work, rankings, strict=True):
            for helper_id, left in ranking.remaining.items():
                remaining[helper_id] = min(left, remaining.get(helper_id, left))
            needs.append(Need(item.request, self.wanted(item.state, item.request), ranking.ranked))
        chosen = assign(needs, remaining, joint=self.config.joint_assignment)
        now = self.clock()
        holds = [(n, pick) for n, picks in enumerate(chosen) for pick in picks]
        won = await self.reservations.reserve_many([_hold(work[n], p) for n, p in holds], now)
        made: list[tuple[Open, Offer]] = []
        full = [0] * len(work)  # per request: picks another request booked first
        for (n, pick), ok in zip(holds, won, strict=True):
            if ok:
                made.append((work[n], self._add_offer(work[n], pick, now)))
            else:
                full[n] += 1
        for n, (item, need, ranking, picks) in enumerate(
            zip(work, needs, rankings, chosen, strict=True)
        ):
            if len(picks) - full[n] < need.wanted:  # a reservation lost a race: try the rest
                rest = [s for s in ranking.ranked if s not in picks]
                full[n] += await self._offer_one_by_one(
                    item, rest, self.wanted(item.state, item.request), now, made
                )
            if self.wanted(item.state, item.request) > 0 and not item.state.open_offers:
                reason = explain(item.request, ranking.rejected, ranking.examined)
                if full[n]:
                    reason += f"; {full[n]} were booked by other requests meanwhile"
                settled = item.state.settle_after_search(reason)
                if settled:
                    metrics.UNMATCHED.inc()
                item.changes += settled
        await self._record_offers(made)

    async def _offer_one_by_one(
        self,
        item: Open,
        candidates: list[Scored],
        limit: int,
        now: datetime,
        made: list[tuple[Open, Offer]],
    ) -> int:
        """Reserve candidates in turn until `limit` offers are made; returns how many were
        already fully booked."""
        full = 0
        for candidate in candidates:
            if limit <= 0:
                break
            if (await self.reservations.reserve_many([_hold(item, candidate)], now))[0]:
                made.append((item, self._add_offer(item, candidate, now)))
                limit -= 1
            else:
                full += 1
        return full

    def _add_offer(self, item: Open, candidate: Scored, now: datetime) -> Offer:
        """The offer on the request's state, with its offer.created change (not yet stored)."""
        request = item.request
        expires = min(now + timedelta(seconds=self.config.offer_ttl_s), request.expires_at)
        offer = Offer(
            _offer_id(request, candidate.helper.id),
            candidate.helper.id,
            "offered",
            round(candidate.score, 4),
            {k: round(v, 4) for k, v in candidate.breakdown.items()},
            expires.isoformat(),
        )
        change = item.state.add_offer(offer)
        change.data = self._offer_created(request, offer)
        item.changes.append(change)
        metrics.OFFERS.inc()
        return offer

    async def _record_offers(self, made: list[tuple[Open, Offer]]) -> None:
        """The offer records, timeout timers and fairness counts of the offers made, written
        before any offer is announced (their events leave only with `flush`)."""
        if not made:
            return
        records, timers = [], []
        for item, offer in made:
            r = item.request
            records.append(
                OfferRecord(r.org, offer.offer_id, r.id, offer.helper_id, r.region, "offered")
            )
            member = {
                "kind": "offer",
                "org": r.org,
                "request_id": r.id,
                "region": r.region,
                "offer_id": offer.offer_id,
            }
            timers.append((member, datetime.fromisoformat(offer.expires_at).timestamp()))
        await asyncio.gather(
            self.offers.create_many(records),
            self.timers.schedule_many(timers),
            self.reservations.count_offers(
                ((item.request.org, offer.helper_id) for item, offer in made), self.clock()
            ),
        )

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

    async def _commit(self, work: list[Open]) -> None:
        """Save each state with its outbox: at once, or within a batch with everything else
        the batch changed, in one round trip at its end. `flush` then publishes the outboxes."""
        saved = []
        for item in work:
            state = item.state
            outbox = [
                *item.raw.get("outbox", []),
                *(self._event_dict(self._to_event(item, c)) for c in item.changes),
            ]
            raw = item.raw | {"outbox": outbox}
            saved.append((state, raw))
            self._loaded[(state.org, state.request_id)] = (state, raw)
            if outbox:
                self._dirty[(state.org, state.request_id)] = (state, raw)
        if self._unsaved is None:
            await self.store.save_many(saved)
        else:
            self._unsaved.update(
                ((state.org, state.request_id), (state, raw)) for state, raw in saved
            )

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
            "urgency": request.urgency,
        }

    def _to_event(self, item: Open, change: Change) -> CloudEvent:
        state = item.state
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
            extensions={ev.ORG_EXTENSION: state.org, "region": item.request.region},
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


def _key(command: CloudEvent) -> tuple[str, str]:
    """(org, request id) a command is about."""
    data = command.data if isinstance(command.data, dict) else {}
    return command.ext(ev.ORG_EXTENSION) or "", data.get("request_id") or command.subject or ""


def _offer_id(request: Request, helper_id: str) -> str:
    """The same request and helper always make the same offer id: a redelivery re-reserves
    the slot it already holds instead of taking a second."""
    return str(uuid.uuid5(OFFER_NAMESPACE, f"{request.org}/{request.id}/{helper_id}"))


def _hold(item: Open, candidate: Scored) -> Hold:
    r = item.request
    helper = candidate.helper
    return Hold(
        r.org, helper.id, _offer_id(r, helper.id), r.window.start, r.window.end, helper.capacity
    )


async def _all(calls: Iterable[Awaitable[None]]) -> None:
    """Run all to the end, then raise the first error if any did (unlike gather, none is
    left running behind the caller's back)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
