"""Notification benchmark: signed webhooks delivered per second to a local sink, and latency
from an event's time to its delivery, beside a raw baseline measured in the same run: the same
HTTP client (WebhookSender) posting the same bodies straight to the same sink, and beside the
minimal pipeline (bench/minimal_notification.py: consume, post the signed webhook, publish a
report, commit; no contacts, dedupe keys, retries or limits), the floor for any notification
service on this stack on this machine.

The service runs as its own processes (python -m leanon_notification, --workers of them, as
LEANON_NOTIFICATION_WORKERS) on local Kafka and Redis; the sink, a bare httptools server that
checks every signature and counts duplicate event ids, is another process. Throughput: a
backlog of events is published at once and the sink's rate from its first to its last delivery
is reported. Latency:
events are published at a fixed rate (half the goal) and each carries its intended send time,
so a stall shows as latency instead of hiding (no coordinated omission).

    python bench/notification.py            # 30k backlog; 2,500/s for 10 s; half the measured rate
    python bench/notification.py --quick    # 10k backlog; the same for 4 s each
    python bench/notification.py --workers 1  # one service process (default: 2)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from hdrh.histogram import HdrHistogram
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

import minimal_notification
from common import (
    STOLEN_NOTED_PCT,
    HttpSink,
    forget_prefix,
    machine,
    machine_busy,
    machine_stolen,
    quiet_gc,
    redis_keys_before,
    redis_rewrites,
    rewritten_first,
    shared_pids,
    stolen_pct,
    tree_cpu_seconds,
    young_kafka_age,
)

from leanon_notification.contacts import ContactBook
from leanon_notification.dispatcher import topics_for
from leanon_notification.settings import NotificationSettings
from leanon_notification.signing import verify
from leanon_notification.webhooks import WebhookSender
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent, encode, now_iso, to_json_bytes
from leanon_shared.coalesce import Headers, send_batches
from leanon_shared.kafka import EventBus, ensure_topics
from leanon_shared.models import Contact
from leanon_shared.settings import LeanOnSettings
from leanon_shared.topics import Topics

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-webhook-secret-0123456789"
ORG = "bench"
HELPERS = 1000
GOAL_RATE = 5000
GOAL_P99_MS = 100
KAFKA_WARM_UP = (1000, 20.0)  # rate, seconds of events when Kafka is young


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the sink: its own process, a histogram per phase (the first path segment) ------------------
# common.HttpSink rather than an aiohttp server: aiohttp spent ~480 µs of CPU per request here,
# so the sink, not the service, set the ceiling. This one still checks each delivery, once the
# phase is over: its signature, its event id (a second delivery of an id counts as a duplicate)
# and its intended send time.
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


class Phase:
    """One phase's deliveries. A post is only noted (arrival time, signature, body) while the
    phase runs; checking and counting it waits for the first full read of the stats, so that
    the sink spends as little as it can of the CPU it shares with what it measures."""

    def __init__(self, now: float) -> None:
        self.arrivals: list[tuple[float, str, bytes]] = []
        self.count = 0
        self.first = now
        self.last = now
        self.ids: set[str] = set()
        self.duplicates = 0
        self.bad_signatures = 0
        self.h = HdrHistogram(1, 600_000_000, 3)
        self.by_second: dict[int, list[float]] = {}  # second of arrival: latencies (ms)

    def note(self, now: float, signature: str, body: bytes) -> None:
        self.arrivals.append((now, signature, body))
        self.last = now

    def _check(self) -> None:
        arrivals, self.arrivals = self.arrivals, []
        for now, signature, body in arrivals:
            if not verify(body, signature, SECRET.encode()):
                self.bad_signatures += 1
                continue
            event = orjson.loads(body)
            if event["id"] in self.ids:
                self.duplicates += 1
            self.ids.add(event["id"])
            self.count += 1
            latency_us = max(1, int((now - event["data"]["t"]) * 1_000_000))
            self.h.record_value(latency_us)
            self.by_second.setdefault(int(now - self.first), []).append(latency_us / 1000)

    def tally(self) -> dict[str, Any]:
        """How many posts came (not yet checked): cheap enough to poll while a phase runs."""
        return {"count": self.count + len(self.arrivals)}

    def stats(self) -> dict[str, Any]:
        self._check()
        quiet_gc()  # the phase is over: collect now rather than during the next one
        h = self.h
        return {
            "count": self.count,
            "first": self.first,
            "last": self.last,
            "duplicates": self.duplicates,
            "bad_signatures": self.bad_signatures,
            **{
                f"p{q}_ms": round(h.get_value_at_percentile(q) / 1000, 2)
                for q in (50, 90, 99, 99.9)
            },
            "max_ms": round(h.get_max_value() / 1000, 2),
            # whether a tail is a moment (a stall) or the whole phase
            "by_second": [
                {
                    "second": second,
                    "count": len(ms),
                    "p50_ms": round(ms[len(ms) // 2], 1),
                    "p99_ms": round(ms[int(len(ms) * 0.99)], 1),
                }
                for second, ms in sorted((k, sorted(v)) for k, v in self.by_second.items())
            ],
        }


class SinkProtocol(HttpSink):
    """POST /<phase>/... records a delivery; GET /<phase> returns that phase's stats, and
    GET /<phase>/tally only how many posts came."""

    phases: ClassVar[dict[str, Phase]] = {}

    def respond(self, method: bytes, url: bytes, signature: str, body: bytes) -> bytes:
        now = time.time()
        _, phase, *rest = url.decode().split("/")
        if method == b"GET":
            p = self.phases.get(phase)
            if p is None:
                out = orjson.dumps({"count": 0})
            else:
                out = orjson.dumps(p.tally() if rest == ["tally"] else p.stats())
            return (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(out), out)
            )
        p = self.phases.get(phase) or self.phases.setdefault(phase, Phase(now))
        p.note(now, signature, body)
        return NO_CONTENT


def sink_main(port: int) -> None:
    quiet_gc()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(SinkProtocol, "127.0.0.1", port, backlog=4096)
        await asyncio.Event().wait()

    uvloop.run(serve())


class Sink:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ctx = multiprocessing.get_context("spawn")
        self.process = ctx.Process(target=sink_main, args=(self.port,), daemon=True)

    async def start(self) -> None:
        self.process.start()
        await until(lambda: self.stats("ping"), 20, "the sink")

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)

    async def stats(self, phase: str, tally: bool = False) -> dict[str, Any] | None:
        """A phase's stats (every post checked), or with `tally` only how many came."""
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                path = f"{self.url}/{phase}/tally" if tally else f"{self.url}/{phase}"
                return dict((await client.get(path)).json())
        except httpx.HTTPError:
            return None


async def until(probe: Any, timeout: float, what: str) -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await probe()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


async def drained(
    sink: Sink,
    phase: str,
    expected: int,
    timeout: float,  # noqa: ASYNC109 - a deadline for a polled condition
) -> dict[str, Any]:
    """Wait for every delivery of a phase, printing progress each second, then check them."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        tally = await sink.stats(phase, tally=True) or {"count": 0}
        if tally["count"] >= expected:
            return await sink.stats(phase) or {"count": 0}
        if tally["count"] != last:
            log(f"  {phase}: {tally['count']:,}/{expected:,} delivered")
            last = tally["count"]
        await asyncio.sleep(1)
    raise TimeoutError(f"{phase}: only {last} of {expected} delivered in {timeout}s")


def event(helper: str, t: float) -> CloudEvent:
    return CloudEvent(
        type=ev.OFFER_CREATED,
        source=ev.SOURCE_MATCHING,
        subject="r-bench",
        time=now_iso(t),  # when it is meant to be sent: the service measures from it too
        data={"request_id": "r-bench", "offer_id": str(uuid.uuid4()), "helper_id": helper, "t": t},
        extensions={ev.ORG_EXTENSION: ORG},
    )


def rate_of(stats: dict[str, Any]) -> float:
    return round(stats["count"] / max(stats["last"] - stats["first"], 1e-9), 1)


def summary(stats: dict[str, Any], **extra: Any) -> dict[str, Any]:
    keep = ("count", "p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms", "duplicates", "by_second")
    assert not stats["bad_signatures"], f"{stats['bad_signatures']} posts had a bad signature"
    return {k: stats[k] for k in keep} | extra


# -- raw baseline: the same client, straight to the sink -----------------------------------------
async def raw_throughput(sink: Sink, n: int, in_flight: int) -> dict[str, Any]:
    client = WebhookSender(SECRET.encode(), frozenset({"127.0.0.1"}), 5.0)
    await client.start()
    slots = asyncio.Semaphore(in_flight)

    async def one(i: int) -> bool:
        async with slots:
            body = to_json_bytes(event(f"h{i % HELPERS}", time.time()))
            outcome = await client.send(f"{sink.url}/raw-throughput/h{i % HELPERS}", body)
            return outcome.delivered

    done = await asyncio.gather(*(one(i) for i in range(n)))
    await client.stop()
    stats = await drained(sink, "raw-throughput", sum(done), 60)
    return summary(stats, per_s=rate_of(stats), failed=n - sum(done))


TICK_S = 0.005
# How fast this machine builds the paced phase's events, with room to spare (~40,000/s).
PREBUILT_PER_S = 10_000


class Schedule:
    """n sends at `rate` a second, the first once all n can have been built: send i is due at
    `due(i)`, and `due_by(sent)` says how many are due now (never early)."""

    def __init__(self, rate: int, n: int) -> None:
        self.rate = rate
        self.n = n
        self.start = time.time() + 0.5 + n / PREBUILT_PER_S

    def due(self, i: int) -> float:
        return self.start + i / self.rate

    def due_by(self, sent: int) -> int:
        return max(sent, min(self.n, int((time.time() - self.start) * self.rate) + 1))


async def raw_latency(sink: Sink, rate: int, seconds: float) -> dict[str, Any]:
    """The same posts on the service's schedule: bodies built before the clock starts, and
    every TICK_S those due by then go out (never early), so the two latencies compare."""
    # No per-host cap and a long timeout: every post waits its turn for one of the same 200
    # connections, so an overload shows as latency rather than as posts refused.
    client = WebhookSender(SECRET.encode(), frozenset({"127.0.0.1"}), 120.0, per_host=10**9)
    await client.start()
    n = int(rate * seconds)
    schedule = Schedule(rate, n)
    posts = [
        (f"{sink.url}/raw-latency/h{i % HELPERS}", to_json_bytes(event(f"h{i % HELPERS}", due)))
        for i, due in enumerate(map(schedule.due, range(n)))
    ]
    tasks = []
    sent = 0
    while sent < n:
        due_by = schedule.due_by(sent)
        tasks += [asyncio.create_task(client.send(url, body)) for url, body in posts[sent:due_by]]
        sent = due_by
        await asyncio.sleep(TICK_S)
    outcomes = await asyncio.gather(*tasks)
    await client.stop()
    ok = sum(o.delivered for o in outcomes)
    stats = await drained(sink, "raw-latency", ok, 60)
    return summary(stats, rate=rate, seconds=seconds, failed=n - ok)


# -- the service -------------------------------------------------------------------------------
async def seed_contacts(redis: Redis, prefix: str, sink: Sink, phase: str) -> None:
    book = ContactBook(redis, prefix)
    for i in range(HELPERS):
        url = f"{sink.url}/{phase}/h{i}"
        await book.put(ORG, "helper", f"{phase}-{i}", Contact(webhook_url=url))


async def service_throughput(
    bus: EventBus, topic: str, sink: Sink, n: int, phase: str
) -> dict[str, Any]:
    """A backlog of `n` events, built first and then published as fast as Kafka takes them,
    so that the publisher spends the two cores the service shares with it on sending alone
    (building the events while publishing held back the service's first seconds)."""
    # Keyed like matching's events (by request), spread over every partition: one key would
    # put the whole backlog on one partition, so on one consumer of one worker.
    records = []
    for i in range(n):
        value, headers = encode(event(f"{phase}-{i % HELPERS}", time.time()))
        records.append((value, b"r%d" % (i % 64), headers))
    began = time.monotonic()
    for sent in range(0, n, BACKLOG_CHUNK):
        await send_batches(bus, topic, records[sent : sent + BACKLOG_CHUNK])
    log(f"  published a backlog of {n:,} events in {time.monotonic() - began:.2f} s")
    stats = await drained(sink, phase, n, 300)
    return summary(stats, per_s=rate_of(stats))


# Records per send_batches call: aiokafka times out batches queued many deep on a partition.
BACKLOG_CHUNK = 4000


async def service_latency(
    bus: EventBus, topic: str, sink: Sink, rate: int, seconds: float, phase: str
) -> dict[str, Any]:
    """Events at a fixed rate, each carrying its own intended send time. They go out every
    TICK_S, those due by then together, one batch per partition (as a service publishing
    events does): the wait for the tick counts as latency. Every record is built before the
    clock starts, so that the publisher, which shares this machine's two cores with the
    service, spends them on sending alone."""
    n = int(rate * seconds)
    schedule = Schedule(rate, n)
    records = []
    for i in range(n):
        value, headers = encode(event(f"{phase}-{i % HELPERS}", schedule.due(i)))
        records.append((value, b"r%d" % (i % 64), headers))
    if (late := time.time() - schedule.start) > 0:  # counted as latency: the events are late
        log(f"  building the events took {late:.2f} s longer than allowed for")
    # One send out at a time, as CoalescingPublisher does: what falls due meanwhile waits for
    # the next (aiokafka times out a batch queued behind many others for one partition).
    sent = 0
    due: list[tuple[bytes, bytes, Headers]] = []
    sending: asyncio.Future[None] | None = None
    while sent < n or due:
        due_by = schedule.due_by(sent)
        due += records[sent:due_by]
        sent = due_by
        if due and (sending is None or sending.done()):
            if sending is not None:
                sending.result()  # raises what the last send met
            sending = asyncio.ensure_future(send_batches(bus, topic, due))
            due = []
        await asyncio.sleep(TICK_S)
    if sending is not None:
        await sending
    log(f"  published {n:,} events at {rate:,}/s")
    stats = await drained(sink, phase, n, 120)
    return summary(stats, rate=rate, seconds=seconds)


async def caught_up(bootstrap: str, group: str, topic: str) -> None:
    """Wait until the service has committed everything on `topic` (its own reports included),
    so one phase's leftovers never queue ahead of the next phase's events."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await probe.start()
    await admin.start()
    try:
        await probe.topics()  # loads the metadata partitions_for_topic reads
        partitions = [TopicPartition(topic, p) for p in probe.partitions_for_topic(topic) or []]

        async def lag() -> int:
            ends = await probe.end_offsets(partitions)
            done = await admin.list_consumer_group_offsets(group, partitions=partitions)
            committed = {tp: done[tp].offset if tp in done else 0 for tp in partitions}
            return sum(ends[tp] - max(committed[tp], 0) for tp in partitions)

        async def none_left() -> bool:
            return await lag() <= 0

        await until(none_left, 300, f"{group} to catch up on {topic}")
    finally:
        await admin.close()
        await probe.stop()


async def settled(bootstrap: str, group: str, members: int) -> None:
    """Wait until every worker has joined the consumer group and it is stable: a rebalance
    during the throughput phase (a second worker joining late) would be measured as a stall."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:

        async def stable() -> bool:
            try:
                described = (await admin.describe_consumer_groups([group]))[0].to_object()
            except GroupCoordinatorNotAvailableError:  # a young Kafka: no offsets topic yet
                return False
            g = described["groups"][0]
            return bool(g["state"] == "Stable" and len(g["members"]) == members)

        await until(stable, 60, f"{members} members of {group}, stable")
    finally:
        await admin.close()


def start_service(prefix: str, port: int, log_path: Path, workers: int) -> subprocess.Popen[bytes]:
    env = pipeline_env(prefix, LEANON_NOTIFICATION_PORT=str(port))
    env["LEANON_NOTIFICATION_WORKERS"] = str(workers)
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "leanon_notification"], env=env, stdout=out, stderr=out
        )


def start_minimal(prefix: str, sink_url: str, workers: int) -> subprocess.Popen[bytes]:
    log_path = Path(tempfile.gettempdir()) / f"{prefix}minimal.log"
    script = str(ROOT / "bench" / "minimal_notification.py")
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, script, sink_url, str(workers)],
            env=pipeline_env(prefix),
            stdout=out,
            stderr=out,
        )


def pipeline_env(prefix: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LEANON_TOPIC_PREFIX=prefix,
        LEANON_WEBHOOK_SECRET=SECRET,
        LEANON_WEBHOOK_ALLOW_HOSTS="127.0.0.1",
        LEANON_LOG_LEVEL="WARNING",
        **extra,
    )
    return env


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = LeanOnSettings()
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix)
    sink = Sink()
    await sink.start()
    redis = Redis.from_url(settings.redis_url, protocol=2)
    results: dict[str, Any] = {"prefix": prefix, "workers": args.workers}
    results["redis_keys_before"] = await redis_keys_before(redis)
    try:
        log(f"raw baseline: {args.backlog:,} posts, then {args.rate:,}/s for {args.seconds} s")
        quiet_gc()
        # 500 in flight: the service's per-host cap
        results["raw_throughput"] = await raw_throughput(sink, args.backlog, 500)
        log(f"  raw: {results['raw_throughput']['per_s']:,}/s")
        quiet_gc()
        results["raw_latency"] = await raw_latency(sink, args.rate, args.seconds)
        log(f"  raw p99 {results['raw_latency']['p99_ms']} ms")

        await ensure_topics(LeanOnSettings(topic_prefix=prefix), topics, floor_topics(prefix))
        for phase in ("warm-up", "service-throughput", "service-latency", "service-sustained"):
            await seed_contacts(redis, prefix, sink, phase)
        bus = EventBus(settings, "bench")
        await bus.start()
        try:
            shared = shared_pids()
            minimal = Pipeline(
                "minimal",
                start_minimal(prefix, sink.url, args.workers),
                minimal_notification.group(prefix),
                minimal_notification.topic(prefix),
                prefix=prefix,
                sink=sink,
                shared=shared,
                redis=redis,
            )
            async with minimal.running(args.workers):
                await minimal.warm_up(bus)
                results.update(await minimal.backlog_then_paced(bus, args))

            port = free_port()
            log_path = Path(tempfile.gettempdir()) / f"{prefix}notification.log"
            service = Pipeline(
                "service",
                start_service(prefix, port, log_path, args.workers),
                f"{prefix}notification",  # the service's consumer group for {prefix}events
                topics.events,
                prefix=prefix,
                sink=sink,
                shared=shared,
                redis=redis,
            )
            async with service.running(args.workers):

                async def ready() -> bool:
                    return (await sink_ready(port)) and service.proc.poll() is None

                await until(ready, 60, "the notification service")
                await service.warm_up(bus)
                results.update(await service.backlog_then_paced(bus, args))
                # And at half of what this machine sustained just now: latency without a backlog.
                sustained = max(50, int(results["service_throughput"]["per_s"] / 2))
                log(f"service: {sustained:,}/s (half its measured throughput) for {args.seconds} s")
                results["service_sustained"] = await service.measured(
                    service_latency(
                        bus, topics.events, sink, sustained, args.seconds, "service-sustained"
                    )
                )
                log(f"  service p99 {results['service_sustained']['p99_ms']} ms")
        finally:
            await bus.stop()
    finally:
        sink.stop()
        await forget_prefix(settings.kafka_bootstrap, settings.redis_url, prefix)
        await redis.aclose()
    results["goals"] = {
        "deliveries_per_s": GOAL_RATE,
        "p99_ms_at_half_rate": GOAL_P99_MS,
        "met_throughput": results["service_throughput"]["per_s"] >= GOAL_RATE,
        "met_latency": results["service_latency"]["p99_ms"] < GOAL_P99_MS,
    }
    return results


def floor_topics(prefix: str) -> dict[str, tuple[int, dict[str, str]]]:
    """The minimal pipeline's own topics, partitioned as the service's events."""
    partitions = LeanOnSettings().topic_partitions
    names = (minimal_notification.topic(prefix), f"{prefix}minimal.reports")
    return {name: (partitions, {}) for name in names}


class Pipeline:
    """A pipeline under test, the service or the minimal floor: its processes, its consumer
    group and the topic it consumes; each of its phases is measured the same way."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        group: str,
        topic: str,
        *,
        prefix: str,
        sink: Sink,
        shared: dict[str, int],
        redis: Redis,
    ) -> None:
        self.name = name
        self.proc = proc
        self.group = group
        self.topic = topic
        self.prefix = prefix
        self.sink = sink
        self.shared = shared
        self.redis = redis
        self.bootstrap = LeanOnSettings().kafka_bootstrap
        self.retried = 0  # records on the retry topics when the last phase ended

    def cpu_now(self) -> dict[str, float]:
        """CPU seconds so far of each process in the run, and of the whole machine."""
        assert self.sink.process.pid is not None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            self.name: tree_cpu_seconds(self.proc.pid),
            "sink": tree_cpu_seconds(self.sink.process.pid),
            "bench (publisher)": usage.ru_utime + usage.ru_stime,
            **{name: tree_cpu_seconds(pid) for name, pid in self.shared.items()},
            "machine (all)": machine_busy()[0],
        }

    @contextlib.asynccontextmanager
    async def running(self, workers: int) -> AsyncIterator[None]:
        """Every worker in the group first (a late joiner's rebalance would be measured as a
        stall), then the phases; stopped after them whatever happened."""
        try:
            await settled(self.bootstrap, self.group, workers)
            self.retried = await retried(self.bootstrap, self.prefix)
            yield
        finally:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    async def warm_up(self, bus: EventBus) -> None:
        """A young Kafka gets unmeasured events first; each new topic and group pays its own
        warm-up."""
        if age := young_kafka_age():
            rate, seconds = KAFKA_WARM_UP
            log(f"Kafka started {age:.0f} s ago: {seconds:.0f} s of unmeasured events first")
            phase = "warm-up" if self.name == "service" else f"{self.name}-warm-up"
            await self.measured(service_latency(bus, self.topic, self.sink, rate, seconds, phase))

    async def backlog_then_paced(
        self, bus: EventBus, args: argparse.Namespace
    ) -> dict[str, dict[str, Any]]:
        """The two phases every pipeline goes through: `{name}_throughput` (a backlog) and
        `{name}_latency` (the paced rate)."""
        name = self.name
        log(f"{name}: a backlog of {args.backlog:,} events")
        throughput = await self.measured(
            service_throughput(bus, self.topic, self.sink, args.backlog, f"{name}-throughput")
        )
        log(f"  {name}: {throughput['per_s']:,}/s")
        log(f"{name}: {args.rate:,}/s for {args.seconds} s")
        latency = await self.measured(
            service_latency(bus, self.topic, self.sink, args.rate, args.seconds, f"{name}-latency")
        )
        log(f"  {name} p99 {latency['p99_ms']} ms")
        return {f"{name}_throughput": throughput, f"{name}_latency": latency}

    async def measured(self, phase: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
        """A phase's results, once the pipeline has caught up on it, with the CPU every process
        spent per delivery and the deliveries put off to a retry topic."""
        await rewritten_first(self.redis)
        quiet_gc()
        rewrites = await redis_rewrites(self.redis)
        before, stolen_since = self.cpu_now(), machine_stolen()
        result = await phase
        await caught_up(self.bootstrap, self.group, self.topic)
        now = self.cpu_now()
        result["stolen_pct"] = stolen_pct(stolen_since)
        if result["stolen_pct"] > STOLEN_NOTED_PCT:
            log(f"  the host took {result['stolen_pct']}% of this machine's CPU meanwhile")
        # A rewrite's fork takes a core for a while: a phase it fell in is dented by it.
        result["redis_rewrites"] = await redis_rewrites(self.redis) - rewrites
        if result["redis_rewrites"]:
            log("  Redis rewrote its files during this phase")
        deliveries = max(1, result["count"])
        result["cpu_ms_per_delivery"] = {
            k: round((now[k] - before[k]) * 1000 / deliveries, 3) for k in now
        }
        self.retried, earlier = await retried(self.bootstrap, self.prefix), self.retried
        result["retried"] = self.retried - earlier
        return result


async def retried(bootstrap: str, prefix: str) -> int:
    """Records written to the retry topics so far: deliveries put off (a busy host, a failure).
    Read from Kafka, not /metrics, which answers for one worker process only."""
    settings = NotificationSettings()
    partitions = [
        TopicPartition(topic, p)
        for topic in topics_for(prefix, settings.retry_policy())
        for p in range(settings.topic_partitions)
    ]
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await probe.start()
    try:
        return sum((await probe.end_offsets(partitions)).values())
    finally:
        await probe.stop()


async def sink_ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    names = ["raw client", "minimal pipeline", "LeanOn"]
    phases = ("raw_throughput", "minimal_throughput", "service_throughput")
    rates = [results[phase]["per_s"] for phase in phases]
    left.bar(names, rates, color=["tab:gray", "tab:blue", "tab:green"])
    left.axhline(GOAL_RATE, color="tab:red", linestyle=":", label=f"goal {GOAL_RATE:,}/s")
    left.set_ylabel("webhooks delivered per second")
    left.set_title("Throughput (a backlog)")
    left.legend(fontsize=8)
    pcts = ["p50_ms", "p90_ms", "p99_ms", "p99.9_ms"]
    xs = range(len(pcts))
    sustained = results["service_sustained"]["rate"]
    rate = results["service_latency"]["rate"]
    series = (
        ("raw_latency", f"raw client at {rate:,}/s", "tab:gray"),
        ("minimal_latency", f"minimal pipeline at {rate:,}/s", "tab:blue"),
        ("service_latency", f"LeanOn at {rate:,}/s", "tab:red"),
        ("service_sustained", f"LeanOn at {sustained:,}/s", "tab:green"),
    )
    width = 0.2
    for offset, (key, label, color) in enumerate(series):
        right.bar(
            [x + offset * width for x in xs],
            [results[key][p] for p in pcts],
            width=width,
            label=label,
            color=color,
        )
    right.set_xticks([x + 1.5 * width for x in xs], [p.replace("_ms", "") for p in pcts])
    right.axhline(GOAL_P99_MS, color="tab:red", linestyle=":", label=f"goal p99 < {GOAL_P99_MS} ms")
    right.set_yscale("log")
    right.set_ylabel("event time to delivery (ms)")
    right.set_title("Event time to delivery")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=30_000)
    parser.add_argument("--rate", type=int, default=GOAL_RATE // 2)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--workers", type=int, default=2, help="service processes (LEANON_NOTIFICATION_WORKERS)"
    )
    parser.add_argument("--quick", action="store_true", help="10k backlog, 4 s paced")
    args = parser.parse_args()
    if args.quick:
        args.backlog, args.seconds = 10_000, 4
    RESULTS.mkdir(exist_ok=True)
    started = time.time()
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = uvloop.run(run(args))
    results["load_average_before"] = load_before  # as the service runs
    results.update(
        benchmark="notification",
        command=" ".join(["python", *sys.argv]),
        machine=machine(),
        finished_at=datetime.now(UTC).isoformat(),
        duration_s=round(time.time() - started, 1),
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"notification-{stamp}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    plot(results, RESULTS / f"notification-{stamp}.png")
    log(f"wrote {out} and its plot")
    raw_t, svc_t = results["raw_throughput"], results["service_throughput"]
    raw_l, svc_l = results["raw_latency"], results["service_latency"]
    min_t, min_l = results["minimal_throughput"], results["minimal_latency"]
    svc_s = results["service_sustained"]
    print(
        f"throughput: service {svc_t['per_s']:,.0f}/s | minimal pipeline {min_t['per_s']:,.0f}/s"
        f" | raw client {raw_t['per_s']:,.0f}/s (goal {GOAL_RATE:,}/s)\n"
        f"latency at {svc_l['rate']:,}/s: service p50 {svc_l['p50_ms']} ms p99 {svc_l['p99_ms']} ms"
        f" | minimal p50 {min_l['p50_ms']} ms p99 {min_l['p99_ms']} ms"
        f" | raw p50 {raw_l['p50_ms']} ms p99 {raw_l['p99_ms']} ms (goal p99 < {GOAL_P99_MS} ms)\n"
        f"CPU per delivery at {svc_l['rate']:,}/s: service "
        f"{svc_l['cpu_ms_per_delivery']['service']} ms, minimal "
        f"{min_l['cpu_ms_per_delivery']['minimal']} ms; whole machine "
        f"{svc_l['cpu_ms_per_delivery']['machine (all)']} / "
        f"{min_l['cpu_ms_per_delivery']['machine (all)']} ms\n"
        f"latency at {svc_s['rate']:,}/s (half the service's throughput): "
        f"p50 {svc_s['p50_ms']} ms p99 {svc_s['p99_ms']} ms\n"
        f"put off to a retry topic: {svc_t['retried']:,} (throughput), {svc_l['retried']:,} "
        f"({svc_l['rate']:,}/s), {svc_s['retried']:,} ({svc_s['rate']:,}/s); "
        f"Redis rewrites in the service's phases: "
        f"{[svc_t['redis_rewrites'], svc_l['redis_rewrites'], svc_s['redis_rewrites']]}; "
        f"CPU taken by the host (steal) in them: "
        f"{[svc_t['stolen_pct'], svc_l['stolen_pct'], svc_s['stolen_pct']]}%; "
        f"service processes: {results['workers']}; "
        f"load average {results['machine']['load_average_1_5_15']}"
    )


if __name__ == "__main__":
    main()
