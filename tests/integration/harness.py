"""Matching running in-process on real Kafka and Redis, driven through intake's service layer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from leanon_intake.readmodel import HelperProfiles, RequestStatuses
from leanon_intake.service import Intake
from leanon_intake.ssrf import WebhookHosts
from leanon_matching.app import create_app
from leanon_matching.settings import MatchingSettings
from leanon_shared import cloudevents
from leanon_shared.kafka import EventBus, ensure_topics
from leanon_shared.models import HelperProfile, RequestSubmission
from leanon_shared.offers import OfferRecords
from leanon_shared.topics import Topics
from tests.conftest import Infra, tap, wait_for

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def tomorrow(hour: int = 10) -> datetime:
    return (datetime.now(UTC) + timedelta(days=1)).replace(
        hour=hour, minute=0, second=0, microsecond=0
    )


def helper(**over: Any) -> HelperProfile:
    body: dict[str, Any] = {
        "skills": {"first_aid": 3},
        "location": {"lat": 52.52, "lon": 13.405},
        "radius_km": 10,
        "availability": {"weekly": [{"day": d, "start": "00:00", "end": "24:00"} for d in DAYS]},
        "capacity": 1,
        "contact": {"email": "x@example.org"},
    }
    body.update(over)
    return HelperProfile.model_validate(body)


def submission(start: datetime | None = None, **over: Any) -> RequestSubmission:
    start = start or tomorrow()
    body: dict[str, Any] = {
        "skills": {"first_aid": 2},
        "location": {"lat": 52.51, "lon": 13.39},
        "window": {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
    }
    body.update(over)
    return RequestSubmission.model_validate(body)


@dataclass
class Events:
    """Every event on {prefix}events, in order."""

    seen: list[cloudevents.CloudEvent] = field(default_factory=list)

    def of(self, request_id: str, type_suffix: str | None = None) -> list[cloudevents.CloudEvent]:
        return [
            e
            for e in self.seen
            if e.subject == request_id and (type_suffix is None or e.type.endswith(type_suffix))
        ]

    def offers(self, request_id: str) -> list[dict[str, Any]]:
        return [e.data for e in self.of(request_id, "offer.created")]


@dataclass
class Rig:
    intake: Intake
    events: Events
    redis: Redis
    settings: MatchingSettings

    async def wait(
        self,
        request_id: str,
        suffix: str,
        count: int = 1,
        timeout: float = 20,  # noqa: ASYNC109 - a deadline for a polled condition
    ) -> list[cloudevents.CloudEvent]:
        async def enough() -> list[cloudevents.CloudEvent] | None:
            found = self.events.of(request_id, suffix)
            return found if len(found) >= count else None

        return await wait_for(enough, timeout=timeout, what=f"{count}x {suffix} for {request_id}")


@contextlib.asynccontextmanager
async def matching(settings: MatchingSettings) -> AsyncIterator[None]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield


@contextlib.asynccontextmanager
async def rig(
    infra: Infra, prefix: str, *, instances: int = 1, redis_db: int | None = None, **settings: Any
) -> AsyncIterator[Rig]:
    """A matching rig on the suite's Redis database, or on `redis_db` (a test that flushes
    its database takes one of its own)."""
    redis_url = (
        infra.redis_url if redis_db is None else infra.redis_url.rsplit("/", 1)[0] + f"/{redis_db}"
    )
    config = MatchingSettings(
        kafka_bootstrap=infra.kafka_bootstrap,
        redis_url=redis_url,
        topic_prefix=prefix,
        topic_partitions=3,
        matching_port=0,
        **settings,
    )
    topics = Topics(prefix)
    await ensure_topics(config, topics)
    redis = Redis.from_url(redis_url, protocol=2)
    bus = EventBus(config, "test-intake")
    await bus.start()
    intake = Intake(
        bus=bus,
        topics=topics,
        profiles=HelperProfiles(redis, prefix),
        statuses=RequestStatuses(redis, prefix),
        offers=OfferRecords(redis, prefix),
        webhook_hosts=WebhookHosts(frozenset()),
    )
    events = Events()

    def on_record(record: Any) -> None:
        events.seen.append(cloudevents.decode(record.value, record.headers))

    try:
        async with tap(infra, [topics.events], on_record), contextlib.AsyncExitStack() as stack:
            for _ in range(instances):
                await stack.enter_async_context(matching(config))
            yield Rig(intake, events, redis, config)
    finally:
        await bus.stop()
        await redis.aclose()
