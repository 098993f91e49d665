"""Read models in Redis: helper profiles (for GET) and request status (built from events)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent, now_iso
from leanon_shared.coalesce import CoalescingRedis

STATUS_TTL_S = 30 * 24 * 3600
OFFER_STATUS = {
    ev.OFFER_CREATED: "offered",
    ev.OFFER_ACCEPTED_EVT: "accepted",
    ev.OFFER_DECLINED_EVT: "declined",
    ev.OFFER_EXPIRED: "expired",
    ev.OFFER_WITHDRAWN: "withdrawn",
    ev.OFFER_DROPPED_EVT: "dropped",
}
REQUEST_STATUS = {
    ev.REQUEST_MATCHED: "matched",
    ev.REQUEST_UNMATCHED: "unmatched",
    ev.REQUEST_EXPIRED: "expired",
    ev.REQUEST_CANCELLED_EVT: "cancelled",
}


class HelperProfiles:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._p = prefix

    def _key(self, org: str, helper_id: str) -> str:
        return f"{self._p}profile:{org}:{helper_id}"

    async def get(self, org: str, helper_id: str) -> dict[str, Any] | None:
        raw = await self._r.get(self._key(org, helper_id))
        return orjson.loads(raw) if raw else None

    async def put(self, org: str, helper_id: str, stored: dict[str, Any]) -> None:
        await self._r.set(self._key(org, helper_id), orjson.dumps(stored))

    async def delete(self, org: str, helper_id: str) -> bool:
        return bool(await self._r.delete(self._key(org, helper_id)))

    async def next_version(self, org: str, helper_id: str) -> tuple[int, bool]:
        """The next version of the helper's profile, and whether a profile is stored now;
        one round trip."""
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.exists(self._key(org, helper_id))
            pipe.incr(f"{self._p}profile-version:{org}:{helper_id}")
            exists, version = await pipe.execute()
        return int(version), bool(exists)


class SeenEvents:
    """CloudEvents (source + id) already applied, per org, remembered for a week."""

    TTL_S = 7 * 24 * 3600

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._r = redis
        self._p = prefix

    def _key(self, org: str, dedupe_key: str) -> str:
        digest = hashlib.blake2b(dedupe_key.encode(), digest_size=16).hexdigest()
        return f"{self._p}seen:{org}:{digest}"

    async def seen(self, org: str, dedupe_key: str) -> bool:
        return bool(await self._r.exists(self._key(org, dedupe_key)))

    async def seen_many(self, keys: Sequence[tuple[str, str]]) -> list[bool]:
        """For each (org, dedupe key): applied before? One round trip."""
        if not keys:
            return []
        found = await self._r.mget([self._key(org, k) for org, k in keys])
        return [v is not None for v in found]

    async def mark_many(self, keys: Sequence[tuple[str, str]]) -> None:
        if not keys:
            return
        async with self._r.pipeline(transaction=False) as pipe:
            for org, k in keys:
                pipe.set(self._key(org, k), b"1", ex=self.TTL_S)
            await pipe.execute()


@dataclass(frozen=True, slots=True)
class NewStatus:
    """A request just accepted, before any event about it."""

    org: str
    request_id: str
    region: str
    helpers_needed: int
    fingerprint: str


class RequestStatuses:
    """GET /v1/requests/{id}: written as pending at submission, then moved by events."""

    FOLDED = frozenset({*OFFER_STATUS, *REQUEST_STATUS, ev.REQUEST_ACCEPTED})  # event types

    def __init__(self, redis: Redis, prefix: str, batch: CoalescingRedis | None = None) -> None:
        self._r = redis
        self._p = prefix
        # single reads and creations of concurrent callers (HTTP requests) gathered into one
        # command each
        self._batch = batch or CoalescingRedis(redis)
        self.marker_key = f"{prefix}status:replayed"
        self.fingerprints_marker_key = f"{prefix}status:fingerprints-replayed"

    def _key(self, org: str, request_id: str) -> str:
        return f"{self._p}status:{org}:{request_id}"

    async def get(self, org: str, request_id: str) -> dict[str, Any] | None:
        raw = await self._batch.get(self._key(org, request_id))
        return orjson.loads(raw) if raw else None

    async def get_many(self, keys: list[tuple[str, str]]) -> list[dict[str, Any] | None]:
        """Statuses of (org, request id) pairs in one round trip."""
        if not keys:
            return []
        raws = await self._r.mget([self._key(org, request_id) for org, request_id in keys])
        return [orjson.loads(raw) if raw else None for raw in raws]

    @staticmethod
    def _pending(new: NewStatus) -> dict[str, Any]:
        """A new request's status; without a fingerprint when none is known (a command
        published before commands carried one)."""
        body = {
            "id": new.request_id,
            "status": "pending",
            "helpers_needed": new.helpers_needed,
            "assignments": [],
            "reason": None,
            "updated_at": now_iso(),
            "region": new.region,
            "fingerprint": new.fingerprint,
        }
        if not new.fingerprint:
            del body["fingerprint"]
        return body

    async def create(self, new: NewStatus) -> bool:
        """The first write wins: a repeated submission leaves the status alone."""
        key, body = self._key(new.org, new.request_id), orjson.dumps(self._pending(new))
        return await self._batch.create(key, body, STATUS_TTL_S)

    async def create_many(self, news: list[NewStatus]) -> None:
        """Several `create`s in one round trip (one script call, not a command each)."""
        await self._batch.create_many(
            [
                (self._key(new.org, new.request_id), orjson.dumps(self._pending(new)), STATUS_TTL_S)
                for new in news
            ]
        )

    async def apply(self, events: list[CloudEvent]) -> int:
        """Fold lifecycle events in, in order: one read and one write per batch.

        Replaying the events topic rebuilds the same view. Returns how many statuses moved.
        """
        relevant = [(target, e) for e in events if (target := self._target(e)) is not None]
        if not relevant:
            return 0
        targets = list(dict.fromkeys(target for target, _ in relevant))
        stored = dict(zip(targets, await self.get_many(targets), strict=True))
        for target, event in relevant:
            stored[target] = self._fold(stored[target], target[1], event)
        async with self._r.pipeline(transaction=False) as pipe:
            for (org, request_id), status in stored.items():
                pipe.set(self._key(org, request_id), orjson.dumps(status), ex=STATUS_TTL_S)
            await pipe.execute()
        return len(stored)

    async def remember_submissions(self, commands: list[CloudEvent]) -> int:
        """Put back, from request.submitted commands, the fingerprints of statuses rebuilt
        from events (which never carry them); a request no event has reached yet comes back
        as pending. Returns how many statuses changed."""
        submitted: dict[tuple[str, str], dict[str, Any]] = {}
        for command in commands:
            data = command.data if isinstance(command.data, dict) else {}
            org, request_id = command.ext(ev.ORG_EXTENSION), data.get("request_id")
            if command.type == ev.REQUEST_SUBMITTED and org and request_id:
                submitted.setdefault((org, str(request_id)), data)  # the first one counts
        if not submitted:
            return 0
        keys = list(submitted)
        changed: dict[tuple[str, str], dict[str, Any]] = {}
        for (org, request_id), status in zip(keys, await self.get_many(keys), strict=True):
            data = submitted[(org, request_id)]
            if status is None:
                request = data.get("request")
                needed = request.get("helpers_needed", 1) if isinstance(request, dict) else 1
                fingerprint = str(data.get("fingerprint", ""))
                new = NewStatus(org, request_id, str(data.get("region", "")), needed, fingerprint)
                changed[(org, request_id)] = self._pending(new)
            elif "fingerprint" not in status and data.get("fingerprint"):
                changed[(org, request_id)] = status | {"fingerprint": data["fingerprint"]}
        async with self._r.pipeline(transaction=False) as pipe:
            for (org, request_id), status in changed.items():
                pipe.set(self._key(org, request_id), orjson.dumps(status), ex=STATUS_TTL_S)
            await pipe.execute()
        return len(changed)

    @staticmethod
    def _target(event: CloudEvent) -> tuple[str, str] | None:
        """The (org, request id) a lifecycle event moves, or None when it moves none."""
        if event.type not in RequestStatuses.FOLDED:
            return None
        org = event.ext(ev.ORG_EXTENSION)
        data = event.data if isinstance(event.data, dict) else {}
        request_id = data.get("request_id") or event.subject
        return (org, str(request_id)) if org and request_id else None

    @classmethod
    def _fold(
        cls, current: dict[str, Any] | None, request_id: str, event: CloudEvent
    ) -> dict[str, Any]:
        data = event.data if isinstance(event.data, dict) else {}
        current = current or {
            "id": request_id,
            "status": "pending",
            "helpers_needed": data.get("helpers_needed", 1),
            "assignments": [],
            "reason": None,
            "region": event.ext("region"),
        }
        if event.type in OFFER_STATUS:
            cls._offer(current, event.type, data)
        elif event.type in REQUEST_STATUS:
            current["status"] = REQUEST_STATUS[event.type]
            if event.type == ev.REQUEST_UNMATCHED:
                current["reason"] = data.get("reason")
        if "status" in data and event.type in REQUEST_STATUS:
            current["status"] = data["status"]
        current["updated_at"] = event.time or now_iso()
        return current

    @staticmethod
    def _offer(current: dict[str, Any], type_: str, data: dict[str, Any]) -> None:
        offer_id = data.get("offer_id")
        assignments: list[dict[str, Any]] = current["assignments"]
        found = next((a for a in assignments if a["offer_id"] == offer_id), None)
        if found is None:
            found = {
                "offer_id": offer_id,
                "helper_id": data.get("helper_id"),
                "status": "offered",
                "score": data.get("score"),
                "breakdown": data.get("breakdown"),
            }
            assignments.append(found)
        found["status"] = OFFER_STATUS[type_]
        if type_ == ev.OFFER_CREATED:
            found.update(score=data.get("score"), breakdown=data.get("breakdown"))
            if current["status"] == "pending":
                current["status"] = "offered"
        if type_ == ev.OFFER_DROPPED_EVT and current["status"] == "matched":
            current["status"] = "offered"
