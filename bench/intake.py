"""Intake benchmark: HTTP submissions and CloudEvents ingestion, each beside a raw baseline
measured in the same run.

HTTP: an open-loop load generator sends POST /v1/requests at stepped rates; each request's
latency counts from its intended send time, so a stalled server cannot hide queueing
(coordinated omission). Two baselines on the same server stack: a bare ASGI endpoint (HTTP
alone), and the minimal intake (bench/minimal_intake.py: HTTP, the Kafka publish and the Redis
status that every accepted submission needs, nothing else), which is the floor for any intake
built on this stack on this machine.

CloudEvents: N org.leanon.request.submitted events are produced to {prefix}intake and timed
until intake has committed them all; the baseline is a raw aiokafka consumer that does the same
hop (consume, produce with acks=all, commit) with no framework, validation or Redis.

    python bench/intake.py             # rates up to saturation, 50k events
    python bench/intake.py --quick     # fewer, shorter steps, 10k events
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    STOLEN_NOTED_PCT,
    forget_prefix,
    histogram,
    log,
    machine_busy,
    machine_stolen,
    percentiles,
    redis_keys_before,
    redis_rewrites,
    redis_url,
    rewritten_first,
    shared_pids,
    stolen_pct,
    tree_cpu_seconds,
    write_results,
    young_kafka_age,
)
from rawpipe import run_hop

from leanon_shared.cloudevents import STRUCTURED_CONTENT_TYPE
from leanon_shared.replay import partitions_of

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789abcdef"
P99_GOAL_MS = 50
GROUP = "leanon-intake"
LOGS = ROOT / ".run" / "bench"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def submission(i: int) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1, minutes=i % 600)
    return {
        "skills": {"first_aid": 1 + i % 3},
        "languages": ["de"],
        "location": {"lat": 52.4 + (i % 100) / 500, "lon": 13.3 + (i % 77) / 400},
        "window": {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
        "description": "Einkäufe in den 3. Stock tragen",
        "contact": {"webhook_url": "https://93.184.215.14/hooks/r"},
    }


class Process:
    """A server process started for the bench and stopped after it."""

    def __init__(self, args: list[str], env: dict[str, str], ready_url: str) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        name = args[2] if args[1] == "-m" else Path(args[1]).stem
        self.log = LOGS / f"{name}-{ready_url.split(':')[2].split('/')[0]}.log"
        with self.log.open("ab") as out:  # a file, never a pipe nobody drains
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=out)
        self.ready_url = ready_url

    async def ready(self, session: aiohttp.ClientSession, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                async with session.get(self.ready_url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)  # polling a starting process, bounded by the deadline
        raise SystemExit(f"{self.ready_url} not ready in {timeout_s}s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def env_for(prefix: str, **extra: Any) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LEANON_TOPIC_PREFIX=prefix,
        LEANON_API_KEYS=f"bench:{KEY}",
        LEANON_RATE_LIMIT_PER_S="1000000",
        LEANON_RATE_LIMIT_BURST="1000000",
        LEANON_LOG_LEVEL="WARNING",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


async def http_step(
    session: aiohttp.ClientSession, url: str, rate: int, seconds: float, bodies: list[bytes]
) -> dict[str, Any]:
    """Open loop: request i is due at start + i / rate, whatever happened to the ones before."""
    latency = histogram()
    statuses: dict[int, int] = {}
    total = int(rate * seconds)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int, due: float) -> None:
        try:
            async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
        except aiohttp.ClientError:
            statuses[0] = statuses.get(0, 0) + 1
        latency.record_value(max(1, int((loop.time() - due) * 1_000_000)))

    start = loop.time() + 0.05
    for i in range(total):
        due = start + i / rate
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sent_by = loop.time()
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    elapsed = loop.time() - start
    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(ok / elapsed, 1),
        "generator_kept_up": sent_by - start < seconds * 1.05,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        **percentiles(latency),
    }


KAFKA_WARM_UP = (1000, 20.0)  # rate, seconds of submissions when Kafka is young
VEGETA = ROOT / ".run" / "bin" / "vegeta"  # built by deploy/local/vegeta.sh (make bench)


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the vegeta runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def vegeta_path() -> str | None:
    return str(VEGETA) if VEGETA.exists() else shutil.which("vegeta")


def vegeta_targets(url: str, bodies: list[bytes], path: Path) -> Path:
    headers = {"Authorization": [f"Bearer {KEY}"], "Content-Type": ["application/json"]}
    with path.open("wb") as out:
        for body in bodies:
            target = {"method": "POST", "url": url, "header": headers, "body": body}
            out.write(orjson.dumps(target, default=lambda b: base64.b64encode(b).decode()))
            out.write(b"\n")
    return path


async def vegeta_step(vegeta: str, targets: Path, rate: int, seconds: float) -> dict[str, Any]:
    """The same open-loop step, sent by vegeta (Go): hit i is due at start + i / rate, and its
    latency counts from then (vegeta's own counts from when it sent), so queueing in the
    generator or a stalled server shows as latency here too."""
    attack = await asyncio.create_subprocess_exec(
        vegeta, "attack", f"-rate={rate}/1s", f"-duration={seconds}s", "-format=json",
        f"-targets={targets}", "-timeout=30s", "-max-connections=256",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    gob, _ = await attack.communicate()
    encode = await asyncio.create_subprocess_exec(
        vegeta, "encode", "--to=json", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    lines, _ = await encode.communicate(gob)
    hits = [orjson.loads(line) for line in lines.splitlines() if line]
    if not hits:
        raise SystemExit("vegeta sent nothing")
    sent = {h["seq"]: datetime.fromisoformat(h["timestamp"]).timestamp() for h in hits}
    # vegeta's pacer started when no hit had yet been held up: the earliest implied start
    start = min(at - seq / rate for seq, at in sent.items())
    latency = histogram()
    statuses: dict[int, int] = {}
    finished = start
    for hit in hits:
        due = start + hit["seq"] / rate
        done = sent[hit["seq"]] + hit["latency"] / 1e9
        finished = max(finished, done)
        latency.record_value(max(1, int((done - due) * 1_000_000)))
        statuses[hit["code"]] = statuses.get(hit["code"], 0) + 1
    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(ok / (finished - start), 1),
        "generator_kept_up": max(sent.values()) - start < seconds * 1.05,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        **percentiles(latency),
    }


# The servers of the HTTP phase: LeanOn, and two floors on the same stack that say what part
# of LeanOn's cost is its own: a bare endpoint (HTTP alone) and the minimal intake (HTTP, the
# Kafka publish and the Redis status every accepted submission needs, and nothing else).
SERVERS = {
    "bare_asgi": ("bare ASGI (HTTP alone)", "bench/bare_asgi.py"),
    "minimal": ("minimal intake (HTTP + Kafka + Redis)", "bench/minimal_intake.py"),
    "leanon": ("LeanOn intake", None),
}


async def http_bench(rates: list[int], seconds: float, prefix: str, workers: int) -> dict[str, Any]:
    bodies = [orjson.dumps(submission(i)) for i in range(2000)]  # no id: each is a new request
    servers: dict[str, Process] = {}
    urls: dict[str, str] = {}
    for name, (_, script) in SERVERS.items():
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        urls[name] = f"{base}/v1/requests"
        if script is None:
            args = [sys.executable, "-m", "leanon_intake"]
            env = env_for(prefix, LEANON_INTAKE_PORT=port, LEANON_INTAKE_WORKERS=workers)
            servers[name] = Process(args, env, f"{base}/readyz")
        else:
            # the same number of processes as LeanOn's (bare ASGI: always one)
            args = [sys.executable, str(ROOT / script), str(port), str(workers)]
            env = env_for(prefix, PYTHONPATH=ROOT / "bench")
            servers[name] = Process(args, env, f"{base}/")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVERS}
    vegeta = vegeta_path()
    log(f"HTTP load from {'vegeta' if vegeta else 'the Python generator (no vegeta)'}")
    targets = {
        name: vegeta_targets(url, bodies, LOGS / f"targets-{name}.jsonl")
        for name, url in urls.items()
    }
    shared = shared_pids()
    connector = aiohttp.TCPConnector(limit=256)
    redis = Redis.from_url(redis_url())
    keys_before = await redis_keys_before(redis)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:

            async def send(name: str, rate: int, seconds: float) -> dict[str, Any]:
                if vegeta:
                    return await vegeta_step(vegeta, targets[name], rate, seconds)
                return await http_step(session, urls[name], rate, seconds, bodies)

            for server in servers.values():
                await server.ready(session)
            if age := young_kafka_age():
                rate, warm_s = KAFKA_WARM_UP
                log(f"Kafka started {age:.0f} s ago: {warm_s:.0f} s of unmeasured submissions")
                await send("leanon", rate, warm_s)
            for name in SERVERS:
                for rate in rates:
                    pid = servers[name].proc.pid
                    await rewritten_first(redis)
                    rewrites = await redis_rewrites(redis)
                    cpu_before, generator_before = cpu_now(pid, shared), children_cpu_s()
                    stolen_since = machine_stolen()
                    step = await send(name, rate, seconds)
                    cpu_after = cpu_now(pid, shared)
                    step["stolen_pct"] = stolen_pct(stolen_since)  # the host's share, meanwhile
                    # a rewrite forks Redis and takes a core for a while: it dents its step
                    step["redis_rewrites"] = await redis_rewrites(redis) - rewrites
                    answered = max(1, sum(step["statuses"].values()))
                    per_request = {
                        k: round((cpu_after[k] - cpu_before[k]) * 1000 / answered, 3)
                        for k in cpu_before
                    }
                    server_ms = per_request.pop("server")
                    step["server_cpu_ms_per_request"] = server_ms
                    step["cpu_ms_per_request"] = per_request  # Kafka, Redis, whole machine
                    if vegeta:  # the generator's own cost, beside the server's
                        generator_ms = (children_cpu_s() - generator_before) * 1000 / answered
                        step["generator_cpu_ms_per_request"] = round(generator_ms, 3)
                    results[name].append(step)
                    log(
                        f"http {name:9} offered {rate:>6}/s achieved {step['achieved_per_s']:>8}/s "
                        f"p50 {step['p50_ms']:>7} ms p99 {step['p99_ms']:>8} ms "
                        f"server CPU {server_ms:.3f} ms/request {step['statuses']}"
                        + (" (Redis rewrote its files meanwhile)" if step["redis_rewrites"] else "")
                        + (
                            f" (the host took {step['stolen_pct']}% of the CPU)"
                            if step["stolen_pct"] > STOLEN_NOTED_PCT
                            else ""
                        )
                    )
                    if step["p99_ms"] > 20 * P99_GOAL_MS or step["achieved_per_s"] < 0.8 * rate:
                        break  # saturated: higher rates only queue
    finally:
        for server in servers.values():
            server.stop()
        await redis.aclose()
    return {
        "redis_keys_before": keys_before,
        "generator": "vegeta v12.13.0" if vegeta else "python aiohttp",
        "steps": results,
        "sustained_per_s": {name: sustained(steps) for name, steps in results.items()},
        "saturated_per_s": {
            name: max((s["achieved_per_s"] for s in steps), default=0.0)
            for name, steps in results.items()
        },
    }


def cpu_now(server: int, shared: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of the server, of Kafka and Redis, and of the whole machine."""
    return {
        "server": tree_cpu_seconds(server),
        **{name.split()[0]: tree_cpu_seconds(pid) for name, pid in shared.items()},
        "machine": machine_busy()[0],
    }


def sustained(steps: list[dict[str, Any]]) -> float:
    """The highest achieved rate of a step whose p99 stayed under the goal."""
    good = [
        s["achieved_per_s"]
        for s in steps
        if s["p99_ms"] < P99_GOAL_MS and s["achieved_per_s"] >= 0.95 * s["offered_per_s"]
    ]
    return max(good, default=0.0)


# -- CloudEvents ---------------------------------------------------------------------------------


def event_record(i: int, run: str) -> tuple[bytes, bytes]:
    body = {
        "specversion": "1.0",
        "type": "org.leanon.request.submitted",
        "source": f"/bench/{run}",
        "id": str(i),
        "orgid": "bench",
        "datacontenttype": "application/json",
        "data": submission(i),
    }
    return str(i).encode(), orjson.dumps(body)


async def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    started = time.monotonic()
    try:
        headers = [("content-type", STRUCTURED_CONTENT_TYPE.encode())]
        futures = [await producer.send(topic, v, key=k, headers=headers) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def committed_to_end(bootstrap: str, topic: str, group: str) -> int:
    """How many records the group has still to commit."""
    tps = await partitions_of(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        end = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        return sum(
            end[tp] - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
            for tp in tps
        )
    finally:
        await admin.close()
        await consumer.stop()


async def timed_drain(
    bootstrap: str, topic: str, group: str, total: int, what: str, limit_s: float
) -> float:
    started = time.monotonic()
    last = started
    while (left := await committed_to_end(bootstrap, topic, group)) > 0:
        if time.monotonic() - last > 2:
            last = time.monotonic()
            log(f"{what}: {total - left:,}/{total:,} committed")
        if time.monotonic() - started > limit_s:
            raise SystemExit(f"{what}: {left} records left after {limit_s}s")
        await asyncio.sleep(0.1)  # polling the committed offsets, bounded by limit_s
    return time.monotonic() - started


async def cloudevents_bench(count: int, prefix: str, bootstrap: str) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    records = [event_record(i, run) for i in range(count)]
    topic = f"{prefix}intake"
    results: dict[str, Any] = {"events": count}

    # raw baseline on its own topics, same partitions as LeanOn's
    raw_source, raw_sink, raw_group = f"{prefix}raw.in", f"{prefix}raw.out", f"{prefix}raw"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    from aiokafka.admin import NewTopic

    await admin.create_topics([NewTopic(raw_source, 6, 1), NewTopic(raw_sink, 6, 1)])
    await admin.close()
    produce_s = await produce_all(bootstrap, raw_source, records)
    stop = asyncio.Event()
    hop = asyncio.create_task(run_hop(bootstrap, raw_source, raw_sink, raw_group, stop))
    raw_s = await timed_drain(bootstrap, raw_source, raw_group, count, "raw aiokafka hop", 600)
    stop.set()
    await hop
    results["raw_aiokafka"] = {"seconds": round(raw_s, 2), "per_s": round(count / raw_s)}
    results["produce_per_s"] = round(count / produce_s)
    log(f"raw aiokafka hop: {count / raw_s:,.0f} events/s")

    # LeanOn: the records wait on the topic, then intake starts and drains them
    port = free_port()
    intake = Process(
        [sys.executable, "-m", "leanon_intake"],
        env_for(prefix, LEANON_INTAKE_PORT=port),
        f"http://127.0.0.1:{port}/readyz",
    )
    try:
        async with aiohttp.ClientSession() as session:
            await intake.ready(session)
        await produce_all(bootstrap, topic, records)
        leanon_s = await timed_drain(bootstrap, topic, prefix + GROUP, count, "LeanOn intake", 900)
    finally:
        intake.stop()
    results["leanon"] = {"seconds": round(leanon_s, 2), "per_s": round(count / leanon_s)}
    results["fraction_of_raw"] = round(
        results["leanon"]["per_s"] / results["raw_aiokafka"]["per_s"], 3
    )
    log(f"LeanOn intake: {count / leanon_s:,.0f} events/s")
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = {"leanon": "tab:green", "minimal": "tab:blue", "bare_asgi": "tab:gray"}
    for name, steps in results["http"]["steps"].items():
        color, label = colors.get(name, "tab:orange"), SERVERS.get(name, (name,))[0]
        offered = [s["offered_per_s"] for s in steps]
        for pct, style in (("p99_ms", "-o"), ("p50_ms", ":o")):
            latencies = [s[pct] for s in steps]
            left.plot(offered, latencies, style, color=color, label=f"{label} {pct[:3]}")
    left.axhline(
        P99_GOAL_MS,
        color="tab:red",
        linewidth=0.8,
        linestyle="--",
        label=f"goal p99 < {P99_GOAL_MS} ms",
    )
    left.set_yscale("log")
    left.set_xlabel("offered POST /v1/requests per second")
    left.set_ylabel("latency from intended send (ms)")
    left.set_title("HTTP submissions")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    ce = results["cloudevents"]
    bars = {"raw aiokafka hop": ce["raw_aiokafka"]["per_s"], "LeanOn intake": ce["leanon"]["per_s"]}
    right.bar(list(bars), list(bars.values()), color=["tab:gray", "tab:green"])
    right.axhline(20_000, color="tab:red", linewidth=0.8, linestyle="--", label="goal 20,000/s")
    right.set_ylabel("CloudEvents ingested per second")
    right.set_title(f"CloudEvents ingestion ({ce['events']:,} events)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--rates",
        type=int,
        nargs="+",
        default=[500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000],
    )
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=1, help="intake processes (HTTP)")
    parser.add_argument(
        "--quick", action="store_true", help="rates 1000-4000, 3 s steps, 10k events"
    )
    args = parser.parse_args()
    if args.quick:
        args.rates, args.seconds, args.events = [1000, 1500, 2000, 3000, 4000], 3, 10_000
    bootstrap = os.environ.get("LEANON_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    started = time.time()
    results: dict[str, Any] = {"benchmark": "intake", "p99_goal_ms": P99_GOAL_MS}
    results["intake_workers"] = args.workers
    http_prefix, ce_prefix = f"bh{uuid.uuid4().hex[:6]}.", f"bc{uuid.uuid4().hex[:6]}."
    try:
        results["http"] = asyncio.run(
            http_bench(args.rates, args.seconds, http_prefix, args.workers)
        )
        results["cloudevents"] = asyncio.run(cloudevents_bench(args.events, ce_prefix, bootstrap))
    finally:
        for prefix in (http_prefix, ce_prefix):
            asyncio.run(forget_prefix(bootstrap, redis_url(), prefix))
    results["duration_s"] = round(time.time() - started, 1)
    out = write_results("intake", results)
    plot(results, out.with_suffix(".png"))
    log(f"wrote {out} and its plot")
    s = results["http"]["sustained_per_s"]
    ce = results["cloudevents"]
    print(
        f"HTTP sustained with p99 < {P99_GOAL_MS} ms: LeanOn {s['leanon']:,.0f}/s, "
        f"minimal intake {s['minimal']:,.0f}/s, bare ASGI {s['bare_asgi']:,.0f}/s\n"
        f"CloudEvents: LeanOn {ce['leanon']['per_s']:,}/s, "
        f"raw aiokafka hop {ce['raw_aiokafka']['per_s']:,}/s ({ce['fraction_of_raw']:.0%})"
    )


if __name__ == "__main__":
    main()
