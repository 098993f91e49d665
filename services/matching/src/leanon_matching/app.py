"""Wires the matching service: one factory builds everything; nothing connects at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from leanon_matching import metrics
from leanon_matching.handlers import CommandHandler, IndexHandler
from leanon_matching.index import HelperIndex
from leanon_matching.rebuild import ensure_index
from leanon_matching.reservations import Reservations
from leanon_matching.service import Matcher
from leanon_matching.settings import MatchingSettings
from leanon_matching.store import RequestStore, Timers
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent
from leanon_shared.kafka import GATHER_MS, EventBus, ensure_topics, make_broker, subscribe_batches
from leanon_shared.offers import OfferRecords
from leanon_shared.runtime import cancel_and_wait, redis_client, redis_ready, wait_for_redis
from leanon_shared.telemetry import health_routes
from leanon_shared.topics import Topics

log = logging.getLogger(__name__)
TIMER_LEASE_S = 30.0


def create_app(settings: MatchingSettings) -> Starlette:
    topics = Topics(settings.topic_prefix)
    redis = redis_client(settings.redis_url)
    bus = EventBus(settings, "leanon-matching")
    broker = make_broker(settings, "leanon-matching")
    prefix = settings.topic_prefix
    timers = Timers(redis, prefix)

    async def publish_events(events: list[CloudEvent]) -> None:
        await bus.publish_many(topics.events, [(e, e.subject) for e in events])

    matcher = Matcher(
        index=HelperIndex(redis, prefix),
        reservations=Reservations(redis, prefix),
        offers=OfferRecords(redis, prefix),
        store=RequestStore(redis, prefix),
        timers=timers,
        publish=publish_events,
        config=settings.matching_config(),
    )
    subscribe_batches(  # a helper's change may reach the index GATHER_MS later
        broker,
        topics.helpers,
        topics.group("leanon-matching-index"),
        IndexHandler(matcher.index),
        gather_ms=GATHER_MS,
    )
    subscribe_batches(
        broker,
        topics.requests,
        topics.group("leanon-matching"),
        CommandHandler(matcher, bus, topics.matching_dlq),
    )

    async def fire_timers() -> None:
        """Turn due timers into commands on the request's own partition, so its owner acts."""
        while True:
            try:
                due = await timers.lease_due(time.time(), TIMER_LEASE_S, 500)
                commands = []
                for t in due:
                    kind = ev.OFFER_TIMEOUT if t["kind"] == "offer" else ev.REQUEST_EXPIRY
                    data = {
                        "request_id": t["request_id"],
                        **({"offer_id": t["offer_id"]} if "offer_id" in t else {}),
                    }
                    command = CloudEvent(
                        type=kind,
                        source=ev.SOURCE_MATCHING,
                        subject=t["request_id"],
                        data=data,
                        extensions={ev.ORG_EXTENSION: t["org"]},
                    )
                    commands.append((command, t["region"]))
                await bus.publish_many(topics.requests, commands)
                await timers.done(due)
                for t in due:
                    metrics.TIMERS_FIRED.labels(t["kind"]).inc()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timer loop failed; retrying")
            await asyncio.sleep(settings.timer_interval_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await wait_for_redis(redis, settings.redis_wait_s)
        await ensure_topics(settings, topics)
        await bus.start()
        # Requests wait until every helper is indexed: a rebuild happens before consuming.
        await ensure_index(
            matcher.index,
            redis,
            settings.kafka_bootstrap,
            topics.helpers,
            f"{prefix}index:rebuild-lock",
        )
        await broker.start()
        timer_task = asyncio.create_task(fire_timers(), name="timers")
        log.info("matching started")
        try:
            yield
        finally:
            await cancel_and_wait(timer_task)
            await broker.stop()
            await bus.stop()
            await redis.aclose()
            log.info("matching stopped")

    async def ready() -> dict[str, bool]:
        return {"redis": await redis_ready(redis), "kafka": await broker.ping(timeout=2)}

    return Starlette(routes=health_routes(ready), lifespan=lifespan)
