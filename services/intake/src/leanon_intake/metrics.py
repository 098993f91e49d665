"""Prometheus metrics for intake."""

from prometheus_client import Counter

INGESTED = Counter(
    "leanon_intake_cloudevents_total", "CloudEvents read from {prefix}intake", ["outcome"]
)
