"""Intake's application service: authorised, validated input becomes records on Kafka.

HTTP routes and the CloudEvents consumer both call these methods, so the two doors behave
the same. Every method publishes to Kafka (acks=all) before it answers.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from leanon_intake.errors import Conflict, Invalid, NotFound
from leanon_intake.readmodel import HelperProfiles, NewStatus, RequestStatuses
from leanon_intake.ssrf import WebhookHosts
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent, encode
from leanon_shared.coalesce import CoalescingPublisher
from leanon_shared.kafka import EventBus
from leanon_shared.models import Contact, HelperProfile, HelperRecord, RequestSubmission, helper_key
from leanon_shared.offers import OfferRecords
from leanon_shared.regions import region_key
from leanon_shared.topics import Topics

ANSWER_TYPES = {
    "accepted": ev.OFFER_ACCEPTED,
    "declined": ev.OFFER_DECLINED,
    "dropped": ev.OFFER_DROPPED,
}


class Unknown:
    """Not looked up yet (distinct from None: looked up, and absent)."""


UNKNOWN = Unknown()
PRIVATE_STATUS_FIELDS = frozenset({"region", "fingerprint"})


def fingerprint_of(body: dict[str, Any]) -> str:
    """What makes two submissions the same request: the body, whichever id it came with.

    `body` is the submission's `model_dump(mode="json")`; orjson writes it byte for byte as
    pydantic's `model_dump_json` does (a unit test holds that), so fingerprints stored by
    earlier versions, which hashed the latter, still compare equal, and the body is built
    once for both the command and its fingerprint."""
    canonical = orjson.dumps({k: v for k, v in body.items() if k != "id"})
    return hashlib.blake2b(canonical, digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class Submitted:
    id: str
    status: str
    created: bool


class Intake:
    def __init__(
        self,
        *,
        bus: EventBus,
        topics: Topics,
        profiles: HelperProfiles,
        statuses: RequestStatuses,
        offers: OfferRecords,
        webhook_hosts: WebhookHosts,
    ) -> None:
        self.bus = bus
        self.topics = topics
        self.profiles = profiles
        self.statuses = statuses
        self.offers = offers
        self.webhook_hosts = webhook_hosts
        # Commands of concurrent callers (HTTP requests, a batch's lanes) go to Kafka as one
        # batch per partition; each caller still returns only once Kafka has its command.
        self._commands = CoalescingPublisher(bus, topics.requests)

    async def _command(self, command: CloudEvent, region: str | None) -> None:
        """Publish to {prefix}requests keyed by region, so a request's commands keep order."""
        value, headers = encode(command)
        await self._commands(value, region.encode() if region else None, headers)

    async def _check_contact(self, contact: Contact | None) -> None:
        if reason := await self.webhook_hosts.refusal(contact):
            raise Invalid(reason, ("body", "contact", "webhook_url"))

    # -- helpers ---------------------------------------------------------------------------
    async def upsert_helper(
        self, org: str, helper_id: str, profile: HelperProfile
    ) -> tuple[int, bool]:
        """Publish the profile to the compacted helpers topic; returns (version, created)."""
        await self._check_contact(profile.contact)
        version, existed = await self.profiles.next_version(org, helper_id)
        record = HelperRecord(
            org=org,
            helper_id=helper_id,
            version=version,
            profile=profile,
            updated_at=datetime.now(UTC),
        )
        await self.bus.send_raw(
            self.topics.helpers, record.model_dump_json().encode(), helper_key(org, helper_id)
        )
        stored = {"id": helper_id, "version": version, **profile.model_dump(mode="json")}
        await self.profiles.put(org, helper_id, stored)
        return version, not existed

    async def get_helper(self, org: str, helper_id: str) -> dict[str, Any]:
        stored = await self.profiles.get(org, helper_id)
        if stored is None:
            raise NotFound(f"helper {helper_id!r} not found")
        return stored

    async def remove_helper(self, org: str, helper_id: str) -> None:
        """A tombstone on the compacted topic: no more offers, contact details erased."""
        if await self.profiles.get(org, helper_id) is None:
            raise NotFound(f"helper {helper_id!r} not found")
        await self.bus.send_raw(self.topics.helpers, None, helper_key(org, helper_id))
        await self.profiles.delete(org, helper_id)

    # -- requests --------------------------------------------------------------------------
    async def submit_request(
        self,
        org: str,
        submission: RequestSubmission,
        request_id: str | None,
        *,
        known: dict[str, Any] | Unknown | None = UNKNOWN,
        deferred: list[NewStatus] | None = None,
    ) -> Submitted:
        """Publish a new request, or answer for the one this id already names.

        `known` is the stored status when the caller has already read it (a batch reads all
        at once); an id made up here is new by construction and needs no read. With
        `deferred`, the new status is appended there for the caller to write (in one round
        trip with others) after the command is published.
        """
        chosen_id = request_id or submission.id
        request_id = chosen_id or str(uuid.uuid4())
        body = submission.model_dump(mode="json")
        fingerprint = fingerprint_of(body)
        if not chosen_id:
            existing = None
        elif isinstance(known, Unknown):
            existing = await self.statuses.get(org, request_id)
        else:
            existing = known
        if existing is not None:
            if existing.get("fingerprint", fingerprint) != fingerprint:
                raise Conflict(
                    f"request id {request_id!r} was already used for a different request"
                )
            return Submitted(request_id, existing["status"], created=False)
        await self._check_contact(submission.contact)
        region = region_key(
            request_id,
            *(
                (submission.location.lat, submission.location.lon)
                if submission.location
                else (None, None)
            ),
        )
        body["id"] = request_id
        command = CloudEvent(
            type=ev.REQUEST_SUBMITTED,
            source=ev.SOURCE_INTAKE,
            subject=request_id,
            # The fingerprint goes with the command (an internal topic that carries the whole
            # submission anyway) so that a status rebuilt after Redis lost it still tells a
            # retry from another request reusing the id; never on {prefix}events.
            data={
                "request_id": request_id,
                "region": region,
                "request": body,
                "fingerprint": fingerprint,
            },
            extensions={ev.ORG_EXTENSION: org},
        )
        # Publish first: a crash before the status is written leaves a retry that publishes
        # again, and matching treats the same request id as one request.
        await self._command(command, region)
        new = NewStatus(org, request_id, region, submission.helpers_needed, fingerprint)
        if deferred is None:
            await self.statuses.create(new)
        else:
            deferred.append(new)
        return Submitted(request_id, "pending", created=True)

    async def get_request(self, org: str, request_id: str) -> dict[str, Any]:
        status = await self.statuses.get(org, request_id)
        if status is None:
            raise NotFound(f"request {request_id!r} not found")
        return {k: v for k, v in status.items() if k not in PRIVATE_STATUS_FIELDS}

    async def cancel_request(self, org: str, request_id: str) -> dict[str, Any]:
        status = await self.statuses.get(org, request_id)
        if status is None:
            raise NotFound(f"request {request_id!r} not found")
        if status["status"] in ("expired",):
            raise Conflict(f"request {request_id!r} is already {status['status']}")
        command = CloudEvent(
            type=ev.REQUEST_CANCELLED,
            source=ev.SOURCE_INTAKE,
            subject=request_id,
            data={"request_id": request_id},
            extensions={ev.ORG_EXTENSION: org},
        )
        await self._command(command, status["region"])
        return {"id": request_id, "status": "cancelled"}

    # -- offers ----------------------------------------------------------------------------
    async def answer_offer(self, org: str, offer_id: str, answer: str) -> dict[str, str]:
        """Move the offer atomically (the answer races the timeout), then tell matching.

        A repeated answer is answered again and re-sent: matching applies it once.
        """
        moved, record = await self.offers.move_returning(org, offer_id, answer)
        if record is None:
            raise NotFound(f"offer {offer_id!r} not found")
        if moved not in ("ok", "same"):
            raise Conflict(f"offer {offer_id!r} is {moved}; it can no longer be {answer}")
        command = CloudEvent(
            type=ANSWER_TYPES[answer],
            source=ev.SOURCE_INTAKE,
            subject=record.request_id,
            data={"request_id": record.request_id, "offer_id": offer_id},
            extensions={ev.ORG_EXTENSION: org},
        )
        await self._command(command, record.region)
        return {"offer_id": offer_id, "status": answer}
