"""Prometheus metrics for matching."""

from prometheus_client import Counter, Histogram

COMMAND_SECONDS = Histogram(
    "leanon_matching_command_seconds",
    "Time to apply one command",
    ["type"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5),
)
OFFERS = Counter("leanon_matching_offers_total", "Offers made")
UNMATCHED = Counter("leanon_matching_unmatched_total", "Requests that ran out of candidates")
INDEX_UPDATES = Counter("leanon_matching_index_updates_total", "Helper index changes", ["kind"])
TIMERS_FIRED = Counter("leanon_matching_timers_fired_total", "Timers published", ["kind"])
BATCH_SECONDS = Histogram(
    "leanon_matching_batch_seconds",
    "Time to apply one consumer batch of commands",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REBUILDS = Counter("leanon_matching_index_rebuilds_total", "Index rebuilds from the helpers topic")
REBUILD_HELPERS = Counter(
    "leanon_matching_index_rebuild_records_total", "Helper records replayed by index rebuilds"
)
DEAD_LETTERS = Counter("leanon_matching_dead_letters_total", "Commands sent to the DLQ")
