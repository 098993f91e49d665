"""CloudEvents types LeanOn reads and writes, and the extension that names the org."""

from __future__ import annotations

ORG_EXTENSION = "orgid"

# In, on {prefix}intake (from other systems) and on {prefix}requests (normalised by intake).
HELPER_UPSERTED = "org.leanon.helper.upserted"
HELPER_REMOVED = "org.leanon.helper.removed"
REQUEST_SUBMITTED = "org.leanon.request.submitted"
REQUEST_CANCELLED = "org.leanon.request.cancelled"
OFFER_ACCEPTED = "org.leanon.offer.accepted"
OFFER_DECLINED = "org.leanon.offer.declined"
OFFER_DROPPED = "org.leanon.offer.dropped"
# Internal timers, published by matching onto {prefix}requests so the region's owner acts.
OFFER_TIMEOUT = "org.leanon.offer.timeout"
REQUEST_EXPIRY = "org.leanon.request.expiry"

INTAKE_TYPES = frozenset(
    {
        HELPER_UPSERTED,
        HELPER_REMOVED,
        REQUEST_SUBMITTED,
        REQUEST_CANCELLED,
        OFFER_ACCEPTED,
        OFFER_DECLINED,
        OFFER_DROPPED,
    }
)
OFFER_ANSWERS = {OFFER_ACCEPTED: "accepted", OFFER_DECLINED: "declined", OFFER_DROPPED: "dropped"}

# Out, on {prefix}events, keyed by request id.
REQUEST_ACCEPTED = "org.leanon.request.accepted"
OFFER_CREATED = "org.leanon.offer.created"
OFFER_ACCEPTED_EVT = "org.leanon.offer.accepted"
OFFER_DECLINED_EVT = "org.leanon.offer.declined"
OFFER_EXPIRED = "org.leanon.offer.expired"
OFFER_WITHDRAWN = "org.leanon.offer.withdrawn"
OFFER_DROPPED_EVT = "org.leanon.offer.dropped"
REQUEST_MATCHED = "org.leanon.request.matched"
REQUEST_UNMATCHED = "org.leanon.request.unmatched"
REQUEST_EXPIRED = "org.leanon.request.expired"
REQUEST_CANCELLED_EVT = "org.leanon.request.cancelled"
NOTIFICATION_DELIVERED = "org.leanon.notification.delivered"
NOTIFICATION_FAILED = "org.leanon.notification.failed"

SOURCE_INTAKE = "/leanon/intake"
SOURCE_MATCHING = "/leanon/matching"
SOURCE_NOTIFICATION = "/leanon/notification"
