"""Kafka topic names and their layout (partitions, compaction)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic LeanOn uses, under one prefix."""

    prefix: str = "leanon."

    @property
    def intake(self) -> str:
        return f"{self.prefix}intake"

    @property
    def intake_dlq(self) -> str:
        return f"{self.prefix}intake.dlq"

    @property
    def helpers(self) -> str:
        return f"{self.prefix}helpers"

    @property
    def requests(self) -> str:
        return f"{self.prefix}requests"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def matching_dlq(self) -> str:
        return f"{self.prefix}matching.dlq"

    @property
    def notification_dlq(self) -> str:
        return f"{self.prefix}notification.dlq"

    def group(self, name: str) -> str:
        """A consumer group under the same prefix: deployments sharing a cluster never share
        a group, so one's rebalances never pause another's consumers."""
        return f"{self.prefix}{name}"

    def layout(self, partitions: int) -> dict[str, tuple[int, dict[str, str]]]:
        """Topic name -> (partitions, topic configs) for creating them."""
        return {
            self.intake: (partitions, {}),
            self.intake_dlq: (1, {}),
            self.helpers: (partitions, {"cleanup.policy": "compact"}),
            self.requests: (partitions, {}),
            self.events: (partitions, {}),
            self.matching_dlq: (1, {}),
            self.notification_dlq: (1, {}),
        }
