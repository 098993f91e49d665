"""Who hears what, once as they can tell: lifecycle events to signed webhooks and email.

One event becomes a delivery per channel of its recipient. Each delivery:
  1. is skipped if its "sent" key exists (delivered before a crash or a redelivery), and is
     claimed for the length of one attempt so two consumers never post it at once;
  2. is attempted once, with its own timeout;
  3. delivered: the sent key is written (holding the report until Kafka has it), then
     notification.delivered is published;
     permanent failure: notification.failed and the DLQ, at once;
     retryable: the event goes to the retry topic of the next delay (same CloudEvents id, so
     the receiver sees one event however often it is posted), or after the last attempt to
     notification.failed and the DLQ;
     deferred (never sent: a healthy host with every slot taken): the shortest retry topic,
     as the same attempt.
Offsets are committed only after that (see consumer.py), so a crash before step 3 finishes
tries again, and the sent key keeps a delivery that had succeeded from being repeated.
Where webhooks are the only channel and no per-helper limit is set, step 1 goes to Redis with
the contact read (`_webhook_at_once`), one round trip fewer before the post.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias

import orjson
from aiokafka import ConsumerRecord
from redis.asyncio import Redis

from leanon_notification import messages, metrics
from leanon_notification.consumer import Record
from leanon_notification.contacts import ContactBook, Reach, Unknown
from leanon_notification.holdback import Holdback
from leanon_notification.limits import OfferLimits
from leanon_notification.reporter import Recipient, Report, Reporter
from leanon_notification.retries import Outcome, RetryPolicy, again_in, delay_name, retryable
from leanon_notification.smtp import EmailSender
from leanon_notification.webhooks import WebhookSender
from leanon_shared import cloudevents
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent
from leanon_shared.coalesce import CoalescingRedis
from leanon_shared.kafka import ERROR_DETAIL_HEADER, ERROR_HEADER, EventBus

log = logging.getLogger(__name__)
HELPER_TYPES = frozenset({ev.OFFER_CREATED, ev.OFFER_WITHDRAWN})
REQUESTER_TYPES = frozenset({ev.REQUEST_MATCHED, ev.REQUEST_UNMATCHED, ev.REQUEST_EXPIRED})
WANTED = HELPER_TYPES | REQUESTER_TYPES
SENT_TTL_S = 7 * 24 * 3600
CONTACT_WAIT_S = 5.0
ALL_CHANNELS = ""
# Retry-topic headers: the attempt to make next, when it is due, the channel ("" = every
# channel of the recipient), when the first attempt was made, and why the last one failed.
ATTEMPT_HEADER = "x-leanon-attempt"
DUE_HEADER = "x-leanon-due-ms"
CHANNEL_HEADER = "x-leanon-channel"
FIRST_HEADER = "x-leanon-first-ms"
ATTEMPTS_HEADER = "x-leanon-attempts"

DONE = b"done"


def recipient_of(event: CloudEvent) -> Recipient | None:
    org = event.ext(ev.ORG_EXTENSION)
    data = event.data if isinstance(event.data, dict) else {}
    if org is None:
        return None
    if event.type in HELPER_TYPES and data.get("helper_id"):
        return Recipient(org, "helper", str(data["helper_id"]))
    if event.type in REQUESTER_TYPES and data.get("request_id"):
        return Recipient(org, "requester", str(data["request_id"]))
    return None


# Not frozen: made for every delivery, and a frozen dataclass's __init__ costs about four
# times as much (an object.__setattr__ per field). Nobody changes one once made.
@dataclass(slots=True)
class Attempt:
    """One event on its way to one recipient: which attempt this is and since when."""

    event: CloudEvent
    to: Recipient
    number: int
    first_ms: int
    channel: str = ALL_CHANNELS


# What `_heads` finds for one record of a batch: (attempt, sent key, contact, claim), nothing to
# do (None), or why it could not be read.
Head: TypeAlias = "tuple[Attempt, str, Reach | Unknown | None, bytes] | Exception | None"


def _type_of(record: ConsumerRecord[bytes, bytes]) -> str | None:
    """The CloudEvents type, read cheaply (binary-mode header or the top-level JSON field)
    before the full decode; None when the record is not readable as an event at all."""
    for name, value in record.headers:
        if name.lower() == "ce_type":
            return str(value.decode("utf-8", "replace"))
    try:
        body = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return None
    kind = body.get("type") if isinstance(body, dict) else None
    return str(kind) if isinstance(kind, str) else None


def retry_topic(prefix: str, delay_s: float) -> str:
    return f"{prefix}notification.retry.{delay_name(delay_s)}"


def retry_due(record: ConsumerRecord[bytes, bytes]) -> float:
    """When a retry record may be handled (epoch seconds): its header, else now."""
    for name, value in record.headers:
        if name == DUE_HEADER:
            with contextlib.suppress(ValueError):
                return int(value) / 1000
    return 0.0


class Dispatcher:
    def __init__(
        self,
        *,
        redis: Redis,
        prefix: str,
        contacts: ContactBook,
        webhooks: WebhookSender,
        email: EmailSender | None,
        email_from: str,
        limits: OfferLimits,
        holdback: Holdback,
        report: Reporter,
        bus: EventBus,
        policy: RetryPolicy,
        dlq_topic: str,
        claim_ttl_s: float,
        pipelines: Redis | None = None,
    ) -> None:
        self._r = redis
        self._p = prefix
        self.contacts = contacts
        self.webhooks = webhooks
        self.email = email
        self.email_from = email_from
        self.limits = limits
        self.holdback = holdback
        self.report = report
        self.bus = bus
        self.policy = policy
        self.dlq_topic = dlq_topic
        # The hot path's reads and writes, gathered into few commands (on `pipelines`, a client
        # whose timeout is per pipeline rather than per reply, when given).
        self._batch = CoalescingRedis(pipelines or redis, claim_ttl_ms=int(claim_ttl_s * 1000))

    # -- entry points ----------------------------------------------------------------------
    @staticmethod
    def concerns_anyone(record: ConsumerRecord[bytes, bytes]) -> bool:
        """Most events (our own reports among them) concern nobody here: skip them cheaply."""
        return _type_of(record) in WANTED

    async def on_event(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """A record from {prefix}events: the first attempt for whoever must hear of it."""
        if found := _addressed(record, "event"):
            await self.notify(Attempt(*found, 1, _now_ms()))

    def start_batch(self, records: Sequence[Record]) -> list[asyncio.Task[None]]:
        """First attempts for records fetched together from {prefix}events: a task each, done
        when its record is, as `on_event`'s would be. Where webhooks are the only channel the
        batch is decoded, and its contacts read and deliveries claimed, in one step and one
        round trip to Redis (`_heads`) that every record's task waits for; otherwise each
        record goes on its own."""
        loop = asyncio.get_running_loop()
        if not self._webhook_only:
            return [loop.create_task(self.on_event(record)) for record in records]
        heads = loop.create_task(self._heads(records))
        return [loop.create_task(self._webhook(heads, n)) for n in range(len(records))]

    async def _heads(self, records: Sequence[Record]) -> list[Head]:
        """Each record's webhook attempt, decoded, with its contact and claim (one MGET and
        one claim call for them all); None for a record that concerns nobody, the exception
        for one that could not be decoded."""
        first_ms = _now_ms()
        heads: list[Head] = [None] * len(records)
        todo: list[tuple[int, Attempt, str]] = []
        for n, record in enumerate(records):
            try:
                found = _addressed(record, "event")
            except Exception as exc:  # that record alone fails (its retries dead-letter it)
                heads[n] = exc
                continue
            if found is not None:
                attempt = Attempt(*found, 1, first_ms, "webhook")
                todo.append((n, attempt, self._sent_key(attempt)))
        book = self.contacts
        replies = await self._batch.read_and_claim_many(
            [(book.key(a.to.org, a.to.role, a.to.id), key, key + ":claim") for _, a, key in todo]
        )
        for (n, attempt, sent_key), (raw, claimed) in zip(todo, replies, strict=True):
            heads[n] = (attempt, sent_key, book.parse(raw), claimed)
        return heads

    async def _webhook(self, heads: asyncio.Task[list[Head]], n: int) -> None:
        """One record of a batch, once the batch's heads are in: as `on_event`."""
        head = (await heads)[n]
        if head is None:
            return
        if isinstance(head, Exception):
            raise head
        webhook, sent_key, reach, claimed = head
        if not await self._webhook_read(webhook, sent_key, reach, claimed):
            # the contact is not known yet: the usual steps wait for it
            everyone = Attempt(webhook.event, webhook.to, 1, webhook.first_ms)
            await self.notify(everyone, at_once=False)

    async def on_retry(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """A record from a retry topic, now due."""
        found = _addressed(record, "retry")
        if found is None:
            return
        event, to = found
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
        attempt = Attempt(
            event,
            to,
            int(headers.get(ATTEMPT_HEADER, "2")),
            int(headers.get(FIRST_HEADER, _now_ms())),
            headers.get(CHANNEL_HEADER, ALL_CHANNELS),
        )
        await self.notify(attempt)

    async def on_poison(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        """A record that fails the same way every time: to the DLQ as it came. Only the error's
        type is kept: a message (a validation error, say) may quote a contact detail."""
        kind = type(exc).__name__
        log.error(
            "dead-lettering %s/%s/%s: %s", record.topic, record.partition, record.offset, kind
        )
        await self.bus.dead_letter(self.dlq_topic, record, "unprocessable", kind)

    # -- steps -----------------------------------------------------------------------------
    async def notify(self, attempt: Attempt, at_once: bool = True) -> None:
        event, to = attempt.event, attempt.to
        data = event.data if isinstance(event.data, dict) else {}
        withdrawn = event.type == ev.OFFER_WITHDRAWN and self.limits.active
        if withdrawn and await self.limits.was_held(to.org, str(data.get("offer_id"))):
            return  # the helper never heard of this offer; no need to withdraw it
        at_once = at_once and self._webhook_only and attempt.channel in (ALL_CHANNELS, "webhook")
        if at_once and await self._webhook_at_once(attempt):
            return
        reach = await self._reach(to)
        if isinstance(reach, Unknown):
            await self._after_failure(attempt, retryable("contact not known yet"))
            return
        if reach is None:
            return  # nobody to tell
        if not await self._may_offer(attempt, reach):
            return
        channels = self._channels(reach)
        if attempt.channel:
            channels = [c for c in channels if c == attempt.channel]
        each = [Attempt(event, to, attempt.number, attempt.first_ms, c) for c in channels]
        if len(each) == 1:
            await self._deliver(each[0], reach)
        else:
            await asyncio.gather(*(self._deliver(a, reach) for a in each))

    @property
    def _webhook_only(self) -> bool:
        """No email and no per-helper limits: whoever is told is told by webhook, and nothing
        stands between knowing the contact and posting."""
        return self.email is None and not self.limits.active

    async def _webhook_at_once(self, attempt: Attempt) -> bool:
        """Reads the contact and claims the webhook delivery in the same round trip to Redis
        (one step fewer before the post), then delivers as `_deliver` does. False, with the
        claim given back, when the contact is not known yet: the usual steps wait for it."""
        to = attempt.to
        webhook = Attempt(attempt.event, to, attempt.number, attempt.first_ms, "webhook")
        sent_key = self._sent_key(webhook)
        claim_key = sent_key + ":claim"
        raw, claimed = await self._batch.read_and_claim(
            self.contacts.key(to.org, to.role, to.id), sent_key, claim_key
        )
        return await self._webhook_read(webhook, sent_key, self.contacts.parse(raw), claimed)

    async def _webhook_read(
        self, webhook: Attempt, sent_key: str, reach: Reach | Unknown | None, claimed: bytes
    ) -> bool:
        """`_webhook_at_once` once the contact is read and the claim has answered."""
        if isinstance(reach, Reach) and reach.contact.webhook_url:
            await self._claimed(webhook, reach, claimed, sent_key)
            return True
        if claimed == b"ok":  # ours, and nothing to post now: give it back
            await self._batch.delete(sent_key + ":claim")
        return not isinstance(reach, Unknown)  # nobody to tell by webhook: done

    async def _may_offer(self, attempt: Attempt, reach: Reach) -> bool:
        """Per-helper limits: an offer held back is declined for the helper, and so re-offered."""
        event, to = attempt.event, attempt.to
        if event.type != ev.OFFER_CREATED or not self.limits.active:
            return True
        offer_id = str(event.data.get("offer_id"))
        decision = await self.limits.decide(
            to.org, to.id, offer_id, reach.timezone, datetime.now(UTC)
        )
        if decision.send:
            return True
        await self.holdback.decline(to.org, offer_id, f"held back: {decision.reason}")
        metrics.HELD_BACK.labels("quiet" if "quiet" in decision.reason else "rate").inc()
        latency = _latency_ms(event, attempt.first_ms)
        await self.report(
            event, to, Report(False, "none", 0, latency, f"held back: {decision.reason}", held=True)
        )
        return False

    def _channels(self, reach: Reach) -> list[str]:
        channels = []
        if reach.contact.webhook_url:
            channels.append("webhook")
        if reach.contact.email and self.email is not None:
            channels.append("email")
        return channels

    async def _deliver(self, attempt: Attempt, reach: Reach) -> None:
        sent_key = self._sent_key(attempt)
        claimed = await self._batch.claim(sent_key, sent_key + ":claim")
        await self._claimed(attempt, reach, claimed, sent_key)

    async def _claimed(self, attempt: Attempt, reach: Reach, claimed: bytes, sent_key: str) -> None:
        """Steps 2 and 3, once the claim has answered."""
        claim_key = sent_key + ":claim"
        if claimed == b"busy":  # another consumer is posting it right now: look again later
            await self._retry(attempt, self.policy.topic_delays[0], "in flight elsewhere")
            return
        if claimed != b"ok":  # delivered before (a redelivery, a restart): never again
            metrics.DUPLICATES_SKIPPED.inc()
            if claimed != DONE:  # ... but its report may not have gone out yet
                await self._reported(attempt, sent_key, Report(**orjson.loads(claimed)))
            return
        try:
            outcome = await self._send(attempt, reach)
        except BaseException:
            await self._r.delete(claim_key)
            raise
        metrics.attempts(attempt.channel, _label(outcome)).inc()
        if outcome.delivered:
            latency = _latency_ms(attempt.event, attempt.first_ms)
            metrics.delivery_seconds(attempt.channel).observe(latency / 1000)
            report = Report(True, attempt.channel, attempt.number, latency, status=outcome.status)
            # Remember the delivery with its report first, so that a crash before the report
            # is published sends the report, never the webhook, again. The claim just lapses.
            value = orjson.dumps(report.as_dict())
            await self._batch.write(sent_key, value, SENT_TTL_S)
            await self._reported(attempt, sent_key, report)
            return
        await self._batch.delete(claim_key)
        await self._after_failure(attempt, outcome)

    async def _reported(self, attempt: Attempt, sent_key: str, report: Report) -> None:
        await self.report(attempt.event, attempt.to, report)
        # Not waited for: were it lost, a redelivery would only publish the same report (the
        # same event id) again, never the webhook.
        self._batch.write_soon(sent_key, DONE, SENT_TTL_S)

    async def _send(self, attempt: Attempt, reach: Reach) -> Outcome:
        event = attempt.event
        if attempt.channel == "webhook":
            assert reach.contact.webhook_url
            return await self.webhooks.send(
                reach.contact.webhook_url, cloudevents.to_json_bytes(event)
            )
        assert self.email is not None and reach.contact.email
        return await self.email.send(messages.render(event, self.email_from, reach.contact.email))

    async def _after_failure(self, attempt: Attempt, outcome: Outcome) -> None:
        if not outcome.attempted:  # nothing went out: again soon, as the same attempt
            shortest = self.policy.topic_delays[0]
            await self._retry(attempt, shortest, outcome.detail, again_in(outcome, shortest))
            return
        plan = self.policy.after(attempt.number, outcome)
        if plan is not None:
            next_try = Attempt(
                attempt.event, attempt.to, attempt.number + 1, attempt.first_ms, attempt.channel
            )
            await self._retry(next_try, plan.delay_s, outcome.detail)
            return
        latency = _latency_ms(attempt.event, attempt.first_ms)
        channel = attempt.channel or "none"
        reason = outcome.detail
        if not outcome.permanent:
            reason = f"gave up after {attempt.number} attempts: {outcome.detail}"
        await self._dead_letter(attempt, "permanent" if outcome.permanent else "gave-up", reason)
        report = Report(False, channel, attempt.number, latency, reason, outcome.status)
        await self.report(attempt.event, attempt.to, report)

    async def _retry(
        self, attempt: Attempt, delay_s: float, why: str, due_in_s: float | None = None
    ) -> None:
        """To the retry topic of `delay_s`, due that long from now (or `due_in_s`)."""
        value, headers = cloudevents.encode(attempt.event)
        due_ms = _now_ms() + int((delay_s if due_in_s is None else due_in_s) * 1000)
        headers += [
            (ATTEMPT_HEADER, str(attempt.number).encode()),
            (DUE_HEADER, str(due_ms).encode()),
            (CHANNEL_HEADER, attempt.channel.encode()),
            (FIRST_HEADER, str(attempt.first_ms).encode()),
            (ERROR_DETAIL_HEADER, why[:300].encode()),
        ]
        await self.bus.send_raw(
            retry_topic(self._p, delay_s), value, self._key(attempt.to), headers
        )

    async def _dead_letter(self, attempt: Attempt, code: str, reason: str) -> None:
        value, headers = cloudevents.encode(attempt.event)
        headers += [
            (ERROR_HEADER, code.encode()),
            (ERROR_DETAIL_HEADER, reason[:1000].encode("utf-8", "replace")),
            (CHANNEL_HEADER, attempt.channel.encode()),
            (ATTEMPTS_HEADER, str(attempt.number).encode()),
        ]
        await self.bus.send_raw(self.dlq_topic, value, self._key(attempt.to), headers)

    async def _reach(self, to: Recipient) -> Reach | Unknown | None:
        """The contacts consumer may be a moment behind the events: wait for it, bounded
        (this task only; every other delivery goes on)."""
        deadline = time.monotonic() + CONTACT_WAIT_S
        key = self.contacts.key(to.org, to.role, to.id)
        while True:
            reach = self.contacts.parse(await self._batch.get(key))
            if not isinstance(reach, Unknown) or time.monotonic() > deadline:
                return reach
            await asyncio.sleep(0.05)

    def _sent_key(self, attempt: Attempt) -> str:
        e, to = attempt.event, attempt.to
        return f"{self._p}sent:{to.org}:{e.source}:{e.id}:{to.role}:{to.id}:{attempt.channel}"

    @staticmethod
    def _key(to: Recipient) -> bytes:
        return f"{to.org}/{to.role}/{to.id}".encode()


def _addressed(
    record: ConsumerRecord[bytes, bytes], what: str
) -> tuple[CloudEvent, Recipient] | None:
    """The record's event and who must hear of it; None (an unreadable one logged) if nobody."""
    try:
        event = cloudevents.decode(record.value, record.headers)
    except cloudevents.InvalidEvent as exc:
        log.error("unreadable %s at %s/%s: %s", what, record.partition, record.offset, exc.code)
        return None
    to = recipient_of(event)
    return None if to is None else (event, to)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _label(outcome: Outcome) -> str:
    if outcome.delivered:
        return "delivered"
    if not outcome.attempted:
        return "deferred"
    return "failed" if outcome.permanent else "retried"


def _latency_ms(event: CloudEvent, first_ms: int) -> float:
    """From the event's own time (else the first attempt) to now."""
    start_ms: float = first_ms
    if event.time:
        with contextlib.suppress(ValueError):
            start_ms = datetime.fromisoformat(event.time).timestamp() * 1000
    # two decimals; round(x, 2) would format text, twenty times slower
    return round((time.time() * 1000 - start_ms) * 100) / 100


def topics_for(prefix: str, policy: RetryPolicy) -> Sequence[str]:
    return [retry_topic(prefix, d) for d in policy.topic_delays]
