"""An offer a per-helper limit holds back is declined for the helper, through the same path as
a helper's own answer: the offer record moves atomically (it races the timeout and any real
answer), then matching gets an offer.declined command and offers the next helper."""

from __future__ import annotations

import uuid

from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent
from leanon_shared.kafka import EventBus
from leanon_shared.offers import OfferRecords

HOLDBACK_NAMESPACE = uuid.UUID("a3f0c9de-2f4e-4f7b-9f37-0f6a1c2b9e55")


class Holdback:
    def __init__(self, offers: OfferRecords, bus: EventBus, requests_topic: str) -> None:
        self.offers = offers
        self.bus = bus
        self.topic = requests_topic

    async def decline(self, org: str, offer_id: str, reason: str) -> bool:
        """Decline on the helper's behalf; False when the offer is no longer open."""
        record = await self.offers.get(org, offer_id)
        if record is None:
            return False
        moved = await self.offers.move(org, offer_id, "declined")
        if moved not in ("ok", "same"):
            return False  # already answered, expired or withdrawn: nothing to move on from
        command = CloudEvent(
            type=ev.OFFER_DECLINED,
            source=ev.SOURCE_NOTIFICATION,
            id=str(uuid.uuid5(HOLDBACK_NAMESPACE, f"{org}/{offer_id}")),
            subject=record.request_id,
            data={"request_id": record.request_id, "offer_id": offer_id, "reason": reason},
            extensions={ev.ORG_EXTENSION: org},
        )
        await self.bus.publish(self.topic, command, record.region)
        return True
