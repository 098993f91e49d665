"""Prometheus metrics for notification (counts only: never a contact detail in a label)."""

import functools

from prometheus_client import Counter, Histogram

DELIVERIES = Counter(
    "leanon_notification_deliveries_total",
    (
        "Delivery attempts by channel and outcome (delivered, retried, failed, dead-lettered;"
        " deferred: not sent, the host's slots all taken)"
    ),
    ["channel", "outcome"],
)
DELIVERY_SECONDS = Histogram(
    "leanon_notification_event_to_delivery_seconds",
    "From the event's time to its delivery",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
DUPLICATES_SKIPPED = Counter(
    "leanon_notification_duplicates_skipped_total", "Events already delivered to that recipient"
)
HELD_BACK = Counter(
    "leanon_notification_offers_held_total", "Offers a per-helper limit held back", ["limit"]
)
CONTACT_UPDATES = Counter(
    "leanon_notification_contact_updates_total", "Contact book changes", ["kind"]
)

# Each labelled child looked up once: .labels() costs more than .inc() on a hot path.
attempts = functools.cache(DELIVERIES.labels)
delivery_seconds = functools.cache(DELIVERY_SECONDS.labels)
