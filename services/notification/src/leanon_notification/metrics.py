"""Prometheus metrics for notification (counts only: never a contact detail in a label)."""

from prometheus_client import Counter

DELIVERIES = Counter(
    "leanon_notification_deliveries_total", "Delivery attempts", ["channel", "outcome"]
)
DUPLICATES_SKIPPED = Counter(
    "leanon_notification_duplicates_skipped_total", "Events already delivered to that recipient"
)
CONTACT_UPDATES = Counter(
    "leanon_notification_contact_updates_total", "Contact book changes", ["kind"]
)
