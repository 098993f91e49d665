"""Prometheus metrics for intake."""

from prometheus_client import Counter

INGESTED = Counter(
    "leanon_intake_cloudevents_total", "CloudEvents read from {prefix}intake", ["outcome"]
)
REJECTED = Counter(
    "leanon_intake_cloudevents_rejected_total",
    "CloudEvents sent to {prefix}intake.dlq, by the x-leanon-error code",
    ["code"],
)
