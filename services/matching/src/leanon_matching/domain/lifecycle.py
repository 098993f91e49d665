"""The request/offer lifecycle: one aggregate per request that records what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RequestStatus = Literal["pending", "offered", "matched", "unmatched", "expired", "cancelled"]
OfferStatus = Literal["offered", "accepted", "declined", "expired", "withdrawn", "dropped"]
OPEN: frozenset[str] = frozenset({"offered"})
HOLDING: frozenset[str] = frozenset({"offered", "accepted"})
FINAL_REQUEST: frozenset[str] = frozenset({"matched", "unmatched", "expired", "cancelled"})


@dataclass(slots=True)
class Offer:
    offer_id: str
    helper_id: str
    status: OfferStatus
    score: float
    breakdown: dict[str, float]
    expires_at: str

    def as_assignment(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "helper_id": self.helper_id,
            "status": self.status,
            "score": self.score,
            "breakdown": self.breakdown,
        }


@dataclass(slots=True)
class Change:
    """Something that happened to the request, to become an event on {prefix}events."""

    type: str
    data: dict[str, Any]
    release: list[str] = field(default_factory=list)  # offer ids whose reservation is freed


@dataclass(slots=True)
class RequestState:
    """The aggregate: status, offers made, helpers asked. Methods return what changed."""

    org: str
    request_id: str
    helpers_needed: int
    status: RequestStatus = "pending"
    offers: dict[str, Offer] = field(default_factory=dict)
    reason: str | None = None

    # -- queries ---------------------------------------------------------------------------
    @property
    def asked(self) -> frozenset[str]:
        return frozenset(o.helper_id for o in self.offers.values())

    @property
    def accepted(self) -> list[Offer]:
        return [o for o in self.offers.values() if o.status == "accepted"]

    @property
    def open_offers(self) -> list[Offer]:
        return [o for o in self.offers.values() if o.status in OPEN]

    @property
    def open_slots(self) -> int:
        """How many more offers to make now to reach helpers_needed."""
        if self.status in FINAL_REQUEST and self.status != "matched":
            return 0
        return max(0, self.helpers_needed - len(self.accepted) - len(self.open_offers))

    def assignments(self) -> list[dict[str, Any]]:
        return [o.as_assignment() for o in self.offers.values()]

    # -- commands --------------------------------------------------------------------------
    def add_offer(self, offer: Offer) -> Change:
        self.offers[offer.offer_id] = offer
        if self.status == "pending":
            self.status = "offered"
        return Change("org.leanon.offer.created", {"offer_id": offer.offer_id})

    def settle_after_search(self, reason: str) -> list[Change]:
        """After a search found no more helpers: unmatched if nobody is left holding a slot."""
        if self.status in FINAL_REQUEST or self.open_offers:
            return []
        if len(self.accepted) >= self.helpers_needed:
            return []
        self.status = "unmatched"
        self.reason = reason
        changes = [Change("org.leanon.request.unmatched", {"reason": reason})]
        # Helpers who accepted part of a request that cannot be filled keep their assignment:
        # the coordinator decides. Their reservation stays until the window ends.
        return changes

    def answer(self, offer_id: str, answer: str) -> list[Change]:
        """A helper accepted, declined or dropped; idempotent for a repeated answer."""
        offer = self.offers.get(offer_id)
        if offer is None:
            return []
        if answer == "accepted" and offer.status == "offered" and self.status not in FINAL_REQUEST:
            offer.status = "accepted"
            changes = [Change("org.leanon.offer.accepted", self._offer_data(offer))]
            if len(self.accepted) >= self.helpers_needed:
                self.status = "matched"
                withdrawn = self._withdraw(OPEN, "filled")
                changes += withdrawn
                changes.append(
                    Change("org.leanon.request.matched", {"assignments": self._accepted_data()})
                )
            return changes
        if answer == "declined" and offer.status == "offered":
            offer.status = "declined"
            return [Change("org.leanon.offer.declined", self._offer_data(offer), [offer_id])]
        if answer == "dropped" and offer.status == "accepted" and self.status != "cancelled":
            offer.status = "dropped"
            if self.status == "matched":
                self.status = "offered"
            return [Change("org.leanon.offer.dropped", self._offer_data(offer), [offer_id])]
        return []

    def time_out(self, offer_id: str) -> list[Change]:
        offer = self.offers.get(offer_id)
        if offer is None or offer.status != "offered":
            return []
        offer.status = "expired"
        return [Change("org.leanon.offer.expired", self._offer_data(offer), [offer_id])]

    def cancel(self) -> list[Change]:
        """Withdraw open offers and accepted assignments alike; their helpers are told."""
        if self.status in ("cancelled", "expired"):
            return []
        changes = self._withdraw(HOLDING, "request cancelled")
        self.status = "cancelled"
        changes.append(Change("org.leanon.request.cancelled", {}))
        return changes

    def expire(self) -> list[Change]:
        """expires_at passed: a request not yet matched gives up."""
        if self.status in FINAL_REQUEST:
            return []
        changes = self._withdraw(OPEN, "request expired")
        self.status = "expired"
        changes.append(Change("org.leanon.request.expired", {}))
        return changes

    # -- internals -------------------------------------------------------------------------
    def _withdraw(self, statuses: frozenset[str], reason: str) -> list[Change]:
        changes = []
        for offer in [o for o in self.offers.values() if o.status in statuses]:
            offer.status = "withdrawn"
            data = self._offer_data(offer) | {"reason": reason}
            changes.append(Change("org.leanon.offer.withdrawn", data, [offer.offer_id]))
        return changes

    def _offer_data(self, offer: Offer) -> dict[str, Any]:
        return {"offer_id": offer.offer_id, "helper_id": offer.helper_id}

    def _accepted_data(self) -> list[dict[str, Any]]:
        return [o.as_assignment() for o in self.accepted]

    # -- persistence shape -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "request_id": self.request_id,
            "helpers_needed": self.helpers_needed,
            "status": self.status,
            "reason": self.reason,
            "offers": [
                {
                    "offer_id": o.offer_id,
                    "helper_id": o.helper_id,
                    "status": o.status,
                    "score": o.score,
                    "breakdown": o.breakdown,
                    "expires_at": o.expires_at,
                }
                for o in self.offers.values()
            ],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RequestState:
        offers = {o["offer_id"]: Offer(**o) for o in raw["offers"]}
        return cls(
            org=raw["org"],
            request_id=raw["request_id"],
            helpers_needed=raw["helpers_needed"],
            status=raw["status"],
            offers=offers,
            reason=raw.get("reason"),
        )
