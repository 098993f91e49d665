"""Notification on real Kafka and Redis: the service in-process, a real webhook receiver that
can fail, stall and refuse on cue, a real SMTP server (aiosmtpd), and everything the service
publishes collected as it comes."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import orjson
from aiohttp import web
from aiokafka import ConsumerRecord
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from leanon_notification.app import create_app
from leanon_notification.contacts import ContactBook
from leanon_notification.settings import NotificationSettings
from leanon_notification.signing import HEADER, verify
from leanon_shared import cloudevents
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent, now_iso
from leanon_shared.kafka import EventBus, ensure_topics
from leanon_shared.models import Contact
from leanon_shared.topics import Topics
from tests.conftest import Infra, free_port, tap, wait_for

SECRET = "integration-webhook-secret-0123"
OTHER_SECRET = "some-other-secret-entirely-0123"
ORG = "org1"
# Small delays so retries show in seconds: attempt 2 after 0.3 s, 3 after 0.6 s, 4 after 1.5 s.
DELAYS = "0.3,0.6,1.5"


# -- the webhook receiver -------------------------------------------------------------------
@dataclass(frozen=True)
class Hit:
    path: str
    at: float  # time.time() when it arrived
    body: bytes
    status: int  # what the receiver answered (or was going to, for a stalled answer)
    signed_ok: bool
    signed_by_other: bool

    @property
    def event(self) -> dict[str, Any]:
        return dict(orjson.loads(self.body))


@dataclass
class Receiver:
    """Answers each path from a script, one entry per call, then 204. An entry is a status,
    ("retry-after", status, seconds), ("slow", seconds, status) or ("hold",): no answer until
    `release()`, and then 503 (the receiver never took it)."""

    url: str
    script: dict[str, list[Any]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def at(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def taken(self, path: str | None = None) -> list[Hit]:
        """Hits the receiver accepted (2xx): what a person would have seen."""
        return [h for h in self.hits if 200 <= h.status < 300 and path in (None, h.path)]

    def release(self) -> None:
        self.released.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        header = request.headers.get(HEADER, "")
        steps = self.script.get(request.path, [])
        step = steps.pop(0) if steps else 204
        signed = verify(body, header, SECRET.encode())
        other = verify(body, header, OTHER_SECRET.encode())
        if isinstance(step, tuple) and step[0] == "hold":
            await self.released.wait()
            self.hits.append(Hit(request.path, time.time(), body, 503, signed, other))
            return web.Response(status=503)
        status = step[1] if isinstance(step, tuple) and step[0] == "retry-after" else step
        if isinstance(step, tuple) and step[0] == "slow":
            status = step[2]
        self.hits.append(Hit(request.path, time.time(), body, status, signed, other))
        if isinstance(step, tuple) and step[0] == "slow":
            await asyncio.sleep(step[1])  # the receiver processed it, but answers late
        headers = (
            {"Retry-After": str(step[2])}
            if isinstance(step, tuple) and step[0] == "retry-after"
            else {}
        )
        return web.Response(status=status, headers=headers)


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    rec = Receiver(f"http://127.0.0.1:{port}")
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield rec
    finally:
        rec.release()
        await runner.cleanup()


# -- the SMTP server ------------------------------------------------------------------------
@dataclass
class Mailbox:
    port: int
    messages: list[Message] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        self.tls.append(session.ssl is not None)
        return "250 Message accepted"


@contextlib.contextmanager
def mailbox(**controller: Any) -> Any:
    box = Mailbox(free_port())
    server = Controller(box, hostname="127.0.0.1", port=box.port, **controller)
    server.start()
    try:
        yield box
    finally:
        server.stop()


# -- the service and what it publishes ------------------------------------------------------
@dataclass
class Rig:
    settings: NotificationSettings
    topics: Topics
    bus: EventBus
    redis: Redis
    contacts: ContactBook
    seen: list[CloudEvent] = field(default_factory=list)
    dead: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)
    raw_reports: list[bytes] = field(default_factory=list)

    async def publish(self, type_: str, data: dict[str, Any], **over: Any) -> CloudEvent:
        event = _event(type_, data, **over)
        await self.bus.publish(self.topics.events, event, event.subject)
        return event

    async def offer(self, helper_id: str, **over: Any) -> CloudEvent:
        return await self.publish(ev.OFFER_CREATED, _offer_data(helper_id) | over)

    async def offers(self, helper_id: str, n: int) -> list[CloudEvent]:
        """n offers for one helper, sent together (a burst), each of its own request."""
        events = [_event(ev.OFFER_CREATED, _offer_data(helper_id)) for _ in range(n)]
        await self.bus.publish_many(self.topics.events, [(e, e.subject) for e in events])
        return events

    async def helper(self, helper_id: str, timezone: str = "UTC", **contact: str) -> None:
        await self.contacts.put(ORG, "helper", helper_id, Contact(**contact), timezone)

    def reports(self, event: CloudEvent | None = None, kind: str = "") -> list[dict[str, Any]]:
        return [
            e.data
            for e in self.seen
            if e.type.startswith("org.leanon.notification." + kind)
            and (event is None or e.data["event_id"] == event.id)
        ]

    async def report(
        self,
        event: CloudEvent,
        kind: str = "",
        timeout: float = 20,  # noqa: ASYNC109 - a deadline for a polled condition
    ) -> dict[str, Any]:
        found = await wait_for(
            lambda: self.reports(event, kind), timeout=timeout, what=f"{kind} report"
        )
        return found[0]

    def dead_for(self, event: CloudEvent) -> list[ConsumerRecord[bytes, bytes]]:
        return [r for r in self.dead if orjson.loads(r.value)["id"] == event.id]


def _event(type_: str, data: dict[str, Any], **over: Any) -> CloudEvent:
    return CloudEvent(
        type=type_,
        source=ev.SOURCE_MATCHING,
        id=over.pop("id", str(uuid.uuid4())),
        subject=data.get("request_id"),
        time=over.pop("time", now_iso()),
        data=data,
        extensions={ev.ORG_EXTENSION: ORG},
    )


def _offer_data(helper_id: str) -> dict[str, Any]:
    rid = f"r-{uuid.uuid4().hex[:8]}"
    return {"request_id": rid, "offer_id": f"o-{uuid.uuid4().hex[:8]}", "helper_id": helper_id}


def notification_settings(infra: Infra, prefix: str, **over: Any) -> NotificationSettings:
    values: dict[str, Any] = dict(
        kafka_bootstrap=infra.kafka_bootstrap,
        redis_url=infra.redis_url,
        topic_prefix=prefix,
        topic_partitions=3,
        notification_port=0,
        webhook_secret=SECRET,
        webhook_allow_hosts="127.0.0.1",
        webhook_timeout_s=1.0,
        retry_delays_s=DELAYS,
        commit_interval_s=0.2,
    )
    values.update(over)
    return NotificationSettings(**values)


@contextlib.asynccontextmanager
async def service(settings: NotificationSettings) -> AsyncIterator[None]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield


@contextlib.asynccontextmanager
async def collecting(infra: Infra, settings: NotificationSettings) -> AsyncIterator[Rig]:
    """Topics, a publisher, and collectors of {prefix}events and the DLQ (no service)."""
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics)
    redis = Redis.from_url(settings.redis_url, protocol=2)
    bus = EventBus(settings, "test-publisher")
    await bus.start()
    rig = Rig(settings, topics, bus, redis, ContactBook(redis, settings.topic_prefix))

    def on_record(record: Any) -> None:
        if record.topic == topics.notification_dlq:
            rig.dead.append(record)
            return
        event = cloudevents.decode(record.value, record.headers)
        if event.source == ev.SOURCE_NOTIFICATION:
            rig.raw_reports.append(record.value)
        rig.seen.append(event)

    try:
        async with tap(infra, [topics.events, topics.notification_dlq], on_record):
            yield rig
    finally:
        await bus.stop()
        await redis.aclose()


@contextlib.asynccontextmanager
async def rig(infra: Infra, prefix: str, **over: Any) -> AsyncIterator[Rig]:
    settings = notification_settings(infra, prefix, **over)
    async with collecting(infra, settings) as r, service(settings):
        yield r
