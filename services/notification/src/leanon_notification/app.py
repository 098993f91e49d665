"""Wires the notification service."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from leanon_notification.contacts import ContactBook
from leanon_notification.dispatcher import Dispatcher, Reporter
from leanon_notification.handlers import EventDeliveries, HelperContacts, RequesterContacts
from leanon_notification.settings import NotificationSettings
from leanon_notification.webhooks import WebhookSender
from leanon_shared.cloudevents import CloudEvent
from leanon_shared.kafka import EventBus, ensure_topics, make_broker, subscribe_batches
from leanon_shared.runtime import redis_client, redis_ready
from leanon_shared.telemetry import health_routes
from leanon_shared.topics import Topics

log = logging.getLogger(__name__)


def create_app(settings: NotificationSettings) -> Starlette:
    secret = settings.signing_secret()  # stops start-up when missing or a placeholder
    topics = Topics(settings.topic_prefix)
    redis = redis_client(settings.redis_url)
    bus = EventBus(settings, "leanon-notification")
    broker = make_broker(settings, "leanon-notification")
    book = ContactBook(redis, settings.topic_prefix)
    webhooks = WebhookSender(secret, settings.allowed_webhook_hosts, settings.webhook_timeout_s)

    async def publish_report(event: CloudEvent) -> None:
        await bus.publish(topics.events, event, event.subject)

    dispatcher = Dispatcher(
        redis,
        settings.topic_prefix,
        book,
        webhooks,
        Reporter(publish_report),
        settings.max_in_flight,
    )
    subscribe_batches(
        broker, topics.helpers, topics.group("leanon-notification-helpers"), HelperContacts(book)
    )
    subscribe_batches(
        broker,
        topics.requests,
        topics.group("leanon-notification-requesters"),
        RequesterContacts(book),
    )
    subscribe_batches(
        broker, topics.events, topics.group("leanon-notification"), EventDeliveries(dispatcher)
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await ensure_topics(settings, topics)
        await bus.start()
        await webhooks.start()
        await broker.start()
        log.info("notification started")
        try:
            yield
        finally:
            await broker.stop()
            await webhooks.stop()
            await bus.stop()
            await redis.aclose()
            log.info("notification stopped")

    async def ready() -> dict[str, bool]:
        return {"redis": await redis_ready(redis), "kafka": await broker.ping(timeout=2)}

    return Starlette(routes=health_routes(ready), lifespan=lifespan)
