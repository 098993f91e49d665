"""Wires the notification service."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from leanon_notification.consumer import PipelinedConsumer
from leanon_notification.contacts import ContactBook
from leanon_notification.dispatcher import Dispatcher, retry_due, topics_for
from leanon_notification.handlers import HelperContacts, RequesterContacts
from leanon_notification.holdback import Holdback
from leanon_notification.limits import OfferLimits
from leanon_notification.reporter import Reporter
from leanon_notification.settings import NotificationSettings
from leanon_notification.smtp import EmailSender
from leanon_notification.webhooks import WebhookSender
from leanon_shared.coalesce import CoalescingPublisher
from leanon_shared.kafka import GATHER_MS, EventBus, ensure_topics, make_broker, subscribe_batches
from leanon_shared.offers import OfferRecords
from leanon_shared.runtime import redis_client, redis_ready, wait_for_redis
from leanon_shared.telemetry import health_routes
from leanon_shared.topics import Topics

log = logging.getLogger(__name__)
CLIENT_ID = "leanon-notification"


def create_app(settings: NotificationSettings) -> Starlette:
    secret = settings.signing_secret()  # stops start-up when missing or a placeholder
    policy = settings.retry_policy()
    smtp = settings.smtp()
    topics = Topics(settings.topic_prefix)
    redis = redis_client(settings.redis_url)
    pipelines = redis_client(settings.redis_url, socket_timeout=None)  # bounded per pipeline
    # Consumer groups are named under the topic prefix, so deployments (and test runs) that
    # share a Kafka cluster never rebalance each other.
    group = f"{settings.topic_prefix}notification"
    bus = EventBus(settings, CLIENT_ID)
    broker = make_broker(settings, CLIENT_ID)
    book = ContactBook(redis, settings.topic_prefix)
    webhooks = WebhookSender(
        secret,
        settings.allowed_webhook_hosts,
        settings.webhook_timeout_s,
        settings.max_in_flight_per_host,
    )

    publish_report = CoalescingPublisher(bus, topics.events)
    dispatcher = Dispatcher(
        redis=redis,
        prefix=settings.topic_prefix,
        contacts=book,
        webhooks=webhooks,
        email=(
            EmailSender(
                smtp, settings.smtp_timeout_s, settings.smtp_ca_file, settings.smtp_connections
            )
            if smtp
            else None
        ),
        email_from=settings.smtp_from,
        limits=OfferLimits(
            redis, settings.topic_prefix, settings.offers_per_hour, settings.quiet()
        ),
        holdback=Holdback(OfferRecords(redis, settings.topic_prefix), bus, topics.requests),
        report=Reporter(publish_report),
        bus=bus,
        policy=policy,
        dlq_topic=topics.notification_dlq,
        # A claim outlives the longest attempt, so a crashed consumer's claim lapses in time.
        claim_ttl_s=max(settings.webhook_timeout_s, settings.smtp_timeout_s if smtp else 0) + 1,
        pipelines=pipelines,
    )
    # Contacts may trail by GATHER_MS: a delivery whose contact is not there yet waits for it.
    subscribe_batches(
        broker, topics.helpers, f"{group}.helpers", HelperContacts(book), gather_ms=GATHER_MS
    )
    subscribe_batches(
        broker, topics.requests, f"{group}.requesters", RequesterContacts(book), gather_ms=GATHER_MS
    )
    retry_topics = topics_for(settings.topic_prefix, policy)
    consumers = [
        PipelinedConsumer(
            bootstrap=settings.kafka_bootstrap,
            topics=[topics.events],
            group_id=group,
            client_id=CLIENT_ID,
            handle=dispatcher.on_event,
            poison=dispatcher.on_poison,
            wanted=dispatcher.concerns_anyone,
            start_batch=dispatcher.start_batch,
            max_in_flight=settings.max_in_flight,
            commit_interval_s=settings.commit_interval_s,
        ),
        PipelinedConsumer(
            bootstrap=settings.kafka_bootstrap,
            topics=retry_topics,
            group_id=f"{group}.retry",
            client_id=CLIENT_ID,
            handle=dispatcher.on_retry,
            poison=dispatcher.on_poison,
            max_in_flight=settings.max_in_flight,
            commit_interval_s=settings.commit_interval_s,
            due=retry_due,
        ),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await wait_for_redis(redis, settings.redis_wait_s)
        extra: dict[str, tuple[int, dict[str, str]]] = {
            t: (settings.topic_partitions, {}) for t in retry_topics
        }
        await ensure_topics(settings, topics, extra)
        await bus.start()
        await webhooks.start()
        await broker.start()
        for consumer in consumers:
            await consumer.start()
        log.info("notification started")
        try:
            yield
        finally:
            for consumer in consumers:
                await consumer.stop()
            await broker.stop()
            await webhooks.stop()
            await bus.stop()
            await redis.aclose()
            await pipelines.aclose()
            log.info("notification stopped")

    async def ready() -> dict[str, bool]:
        return {
            "redis": await redis_ready(redis),
            "kafka": await broker.ping(timeout=2),
            "consumers": all(c.running for c in consumers),
        }

    return Starlette(routes=health_routes(ready), lifespan=lifespan)
