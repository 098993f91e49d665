"""Wires the intake service: HTTP API, CloudEvents consumer and the status read model."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from leanon_intake import asyncapi
from leanon_intake.fastpath import SubmitFastPath, is_submission
from leanon_intake.handlers import IntakeEvents, StatusProjection, SubmissionReplay
from leanon_intake.http import BodyLimit, build_router, install_error_handlers
from leanon_intake.ratelimit import RateLimiter
from leanon_intake.readmodel import HelperProfiles, RequestStatuses, SeenEvents
from leanon_intake.service import Intake
from leanon_intake.settings import IntakeSettings
from leanon_intake.ssrf import WebhookHosts
from leanon_shared.kafka import GATHER_MS, EventBus, ensure_topics, make_broker, subscribe_batches
from leanon_shared.offers import OfferRecords
from leanon_shared.replay import ensure_replayed
from leanon_shared.runtime import redis_client, redis_ready, wait_for_redis
from leanon_shared.telemetry import health_routes
from leanon_shared.topics import Topics

log = logging.getLogger(__name__)


class IntakeApp(FastAPI):
    """The intake app: FastAPI, except that submissions meet `submissions` (fastpath.py) before
    FastAPI's middleware stack, which then sees only what that hands on."""

    submissions: SubmitFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.submissions is not None and is_submission(scope):
            await self.submissions(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: IntakeSettings) -> IntakeApp:
    key_to_org = settings.key_to_org()  # stops start-up without usable API keys
    topics = Topics(settings.topic_prefix)
    redis = redis_client(settings.redis_url)
    bus = EventBus(settings, "leanon-intake")
    broker = make_broker(settings, "leanon-intake")
    statuses = RequestStatuses(redis, settings.topic_prefix)
    intake = Intake(
        bus=bus,
        topics=topics,
        profiles=HelperProfiles(redis, settings.topic_prefix),
        statuses=statuses,
        offers=OfferRecords(redis, settings.topic_prefix),
        webhook_hosts=WebhookHosts(settings.allowed_webhook_hosts),
    )
    limiter = RateLimiter(
        redis, settings.topic_prefix, settings.default_limit(), settings.limit_overrides()
    )
    known_orgs = frozenset(key_to_org.values())
    seen = SeenEvents(redis, settings.topic_prefix)
    subscribe_batches(
        broker,
        topics.intake,
        topics.group("leanon-intake"),
        IntakeEvents(intake, bus, topics.intake_dlq, known_orgs, seen),
    )
    projection = StatusProjection(statuses)
    # Statuses are read by people polling GET: they may trail the events by GATHER_MS.
    subscribe_batches(
        broker,
        topics.events,
        topics.group("leanon-intake-status"),
        projection,
        gather_ms=GATHER_MS,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await wait_for_redis(redis, settings.redis_wait_s)
        await ensure_topics(settings, topics)
        # The status read model is derived from {prefix}events: rebuilt if Redis lost it,
        # with the submissions' fingerprints from {prefix}requests.
        await ensure_replayed(
            redis, statuses.marker_key, settings.kafka_bootstrap, topics.events, projection
        )
        await ensure_replayed(
            redis,
            statuses.fingerprints_marker_key,
            settings.kafka_bootstrap,
            topics.requests,
            SubmissionReplay(statuses),
        )
        await bus.start()
        await broker.start()
        log.info("intake started")
        try:
            yield
        finally:
            await broker.stop()
            await bus.stop()
            await redis.aclose()
            log.info("intake stopped")

    async def ready() -> dict[str, bool]:
        return {"redis": await redis_ready(redis), "kafka": await broker.ping(timeout=2)}

    app = IntakeApp(
        title="LeanOn intake",
        version="1",
        description="Help requests, helper profiles and answers to offers.",
        lifespan=lifespan,
    )
    app.router.routes.extend(health_routes(ready))
    spec = asyncapi.document(topics, settings.kafka_bootstrap)

    @app.get("/asyncapi", include_in_schema=False)
    async def asyncapi_document() -> dict[str, Any]:
        """The Kafka side of the contract (AsyncAPI 3.0)."""
        return spec

    # The routes go straight onto the app: include_router adds a resolution step to every
    # request (about a quarter of FastAPI's own time per call, measured here).
    app.router.routes.extend(build_router(intake, key_to_org, limiter).routes)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    everything_else = functools.partial(FastAPI.__call__, app)
    app.submissions = SubmitFastPath(
        everything_else, intake, key_to_org, limiter, settings.max_body_bytes
    )
    return app
