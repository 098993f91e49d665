"""Kafka plumbing every service uses: safe producer, topic creation, batch subscribers, DLQ.

Producers use acks=all with idempotence. Subscribers take batches and commit, on a timer, only
offsets of records whose handler has returned (leanon_shared.commits): a handler that raises
rewinds the batch so it comes again, so handlers must be idempotent and must send a record they
can never process to a dead-letter topic instead of raising.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from leanon_shared.cloudevents import CloudEvent, encode
from leanon_shared.commits import (
    COMMIT_EVERY_S,
    IDLE_POLL_MS,
    CommitBeforeRevoke,
    TimedCommitSubscriber,
)
from leanon_shared.settings import LeanOnSettings
from leanon_shared.topics import Topics

log = logging.getLogger(__name__)

ERROR_HEADER = "x-leanon-error"
ERROR_DETAIL_HEADER = "x-leanon-error-detail"
RecordHandler = Callable[[Sequence[ConsumerRecord[bytes, bytes]]], Awaitable[None]]
# How long a stop (or a rebalance) waits for the batch in hand before giving up on it.
GRACEFUL_S = 15.0
# For a subscriber nobody waits on (a read model, a book of contacts): the broker holds its
# fetch until this much has gathered or `gather_ms` has passed, so the subscriber wakes a few
# times a second instead of once per record. On a small VM each wake-up of an aiokafka
# consumer costs about a millisecond of CPU whatever it brings.
GATHER_MIN_BYTES = 1 << 20
# What such subscribers use: a status or a contact is at most this much later.
GATHER_MS = 100


def producer(settings: LeanOnSettings, client_id: str) -> AIOKafkaProducer:
    """A producer that loses nothing it acknowledged: acks=all, idempotent, small linger."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
    )


class EventBus:
    """Publishes CloudEvents and raw records; every send returns only once Kafka has it."""

    def __init__(self, settings: LeanOnSettings, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._kafka: AIOKafkaProducer | None = None

    @property
    def kafka(self) -> AIOKafkaProducer:
        if self._kafka is None:
            raise RuntimeError("EventBus used before start()")
        return self._kafka

    async def start(self) -> None:
        """aiokafka wants its producer made inside the running loop, so it is made here."""
        self._kafka = producer(self._settings, self._client_id)
        await self._kafka.start()

    async def stop(self) -> None:
        await self.kafka.stop()

    async def publish(self, topic: str, event: CloudEvent, key: str | bytes | None) -> None:
        await self.publish_many(topic, [(event, key)])

    async def publish_many(
        self, topic: str, events: Iterable[tuple[CloudEvent, str | bytes | None]]
    ) -> None:
        """Send all without waiting on each, then wait for every acknowledgement."""
        futures = []
        for event, key in events:
            value, headers = encode(event)
            futures.append(await self.kafka.send(topic, value, key=_bytes(key), headers=headers))
        if futures:
            await asyncio.gather(*futures)

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        future = await self.kafka.send(topic, value, key=key, headers=list(headers))
        await future

    async def dead_letter(
        self, topic: str, record: ConsumerRecord[bytes, bytes], code: str, detail: str
    ) -> None:
        """The original key, value and headers, plus why it was rejected."""
        headers = [
            *record.headers,
            (ERROR_HEADER, code.encode()),
            (ERROR_DETAIL_HEADER, detail[:1000].encode("utf-8", "replace")),
        ]
        await self.send_raw(topic, record.value, record.key, headers)


def _bytes(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


async def ensure_topics(
    settings: LeanOnSettings,
    topics: Topics | None = None,
    extra: Mapping[str, tuple[int, dict[str, str]]] | None = None,
) -> None:
    """Create LeanOn's topics, and a service's own `extra` ones, if missing (idempotent; safe
    from every instance)."""
    topics = topics or Topics(settings.topic_prefix)
    layout = {**topics.layout(settings.topic_partitions), **(extra or {})}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="leanon-admin"
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, partitions, 1, topic_configs=configs)
            for name, (partitions, configs) in layout.items()
            if name not in existing
        ]
        if wanted:
            # create_topics reports per-topic errors in its response rather than raising them.
            response = await admin.create_topics(wanted)
            for topic_error in response.to_object()["topic_errors"]:
                code = topic_error["error_code"]
                if code and not issubclass(for_code(code), TopicAlreadyExistsError):
                    raise for_code(code)(topic_error.get("error_message") or topic_error["topic"])
    finally:
        await admin.close()


def make_broker(settings: LeanOnSettings, client_id: str) -> KafkaBroker:
    """The FastStream broker that hosts a service's subscribers."""
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        graceful_timeout=GRACEFUL_S,
        logger=logging.getLogger(f"leanon.{client_id}.kafka"),
        log_level=logging.DEBUG,  # per-message logs stay off the hot path
        # Handlers take the raw records, so FastStream's dependency injection has nothing to do,
        # and with it on, resolving the `message` context ran in a worker thread every batch.
        apply_types=False,
    )


def subscribe_batches(
    broker: KafkaBroker,
    topic: str,
    group_id: str,
    handler: RecordHandler,
    *,
    max_records: int = 500,
    commit_every_s: float = COMMIT_EVERY_S,
    gather_ms: int | None = None,
) -> TimedCommitSubscriber:
    """Register a batch subscriber that hands raw records to `handler` and commits what it
    finished on a timer (leanon_shared.commits); a batch whose handler raises comes again.

    With `gather_ms`, records may wait up to that long on the broker to arrive together (see
    GATHER_MIN_BYTES); without, each fetch returns as soon as anything is there."""
    listener = CommitBeforeRevoke()
    subscriber = TimedCommitSubscriber.adopt(
        broker.subscriber(
            topic,
            group_id=group_id,
            batch=True,
            max_records=max_records,
            batch_timeout_ms=IDLE_POLL_MS,  # unused: our get_msg polls
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,  # commits are ours, see leanon_shared.commits
            listener=listener,
            parser=_raw_batch_parser,
            decoder=_raw_decoder,
            title=f"{group_id}:{topic}",
            # aiokafka's defaults without gathering: back as soon as any record is there
            fetch_min_bytes=1 if gather_ms is None else GATHER_MIN_BYTES,
            fetch_max_wait_ms=500 if gather_ms is None else gather_ms,
        ),
        commit_every_s,
        GRACEFUL_S,
    )
    listener.subscriber = subscriber

    async def on_batch(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        try:
            await handler(records)
        except Exception:
            subscriber.rewind(records)
            raise  # FastStream logs it
        subscriber.finished(records)

    subscriber(on_batch)
    return subscriber


async def _raw_batch_parser(records: Any, original: Any) -> Any:
    """FastStream's own parser decodes every header as UTF-8 and so crash-loops on one that is
    not; ours leaves records untouched (handlers read them raw) and never fails."""
    parser = original.__self__
    first, last = records[0], records[-1]
    return parser.msg_class(
        body=b"",
        headers={},
        batch_headers=[],
        reply_to="",
        content_type=None,
        message_id=f"{first.topic}-{first.partition}-{first.offset}-{last.offset}",
        correlation_id=None,
        raw_message=records,
        path={},
        consumer=parser._consumer,
    )


async def _raw_decoder(message: Any) -> Any:
    """Skip FastStream's JSON decoding: the handler's argument is the batch's raw records."""
    return message.raw_message
