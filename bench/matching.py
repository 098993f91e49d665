"""Matching benchmark: LeanOn's Redis index against PostgreSQL + PostGIS, in the same run.

For each population size it loads the same seeded synthetic helpers into both, then measures
the decision latency per request (LeanOn: candidates, constraints and score, ranked; PostGIS:
one query per request), Redis memory per helper, the index rebuild from Kafka at the largest
size, and joint (batch) assignment against greedy on one busy region.

    python bench/matching.py                   # 10k, 100k, 1M helpers
    python bench/matching.py --quick           # 10k and 100k, fewer requests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
from hdrh.histogram import HdrHistogram
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

import city
import postgis
from common import RESULTS, cpu_seconds, log, machine, shared_pids

from leanon_matching import rebuild as rebuild_module
from leanon_matching.bulk import IndexBuilder, send, set_writes
from leanon_matching.convert import helper_from_json
from leanon_matching.domain.assignment import Need, assign, gini, total_score
from leanon_matching.domain.model import Helper, Interval, Request
from leanon_matching.index import HelperIndex
from leanon_matching.rebuild import LOAD_CHUNK, replay
from leanon_matching.reservations import Reservations
from leanon_matching.service import Matcher, MatchingConfig
from leanon_shared.runtime import tune_gc

BENCH = Path(__file__).resolve().parent


def to_helper(raw: dict[str, Any]) -> Helper:
    """The helper as matching's index holds it, through the same conversion a rebuild uses."""
    return helper_from_json(record(raw))


def to_request(raw: dict[str, Any]) -> Request:
    window = Interval(raw["window_start"], raw["window_end"])
    return Request(
        raw["org"],
        raw["id"],
        dict(raw["skills"]),
        frozenset(raw["languages"]),
        raw["lat"],
        raw["lon"],
        window,
        raw["urgency"],
        1,
        raw["window_start"],
    )


def record(raw: dict[str, Any]) -> dict[str, Any]:
    """The helpers-topic record intake would have written for this helper."""
    profile = {
        "skills": raw["skills"],
        "languages": raw["languages"],
        "location": {"lat": raw["lat"], "lon": raw["lon"]},
        "radius_km": raw["radius_km"],
        "availability": {"timezone": raw["timezone"], "weekly": raw["weekly"], "windows": []},
        "capacity": raw["capacity"],
        "contact": {"email": "bench@example.org"},
    }
    return {
        "org": raw["org"],
        "helper_id": raw["id"],
        "version": 1,
        "profile": profile,
        "updated_at": datetime.now(UTC).isoformat(),
    }


def record_json(raw: dict[str, Any]) -> bytes:
    return orjson.dumps(record(raw))


async def used_memory(redis: Redis) -> int:
    """Redis's memory without its clients' buffers: the load's large commands leave a query
    buffer behind for a while, which is no part of the index."""
    info = await redis.info("memory")
    return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))


async def load_index(index: HelperIndex, raw_helpers: list[dict[str, Any]]) -> float:
    """Fill the index the way a rebuild does (built in this process; same keys as updates)."""
    started = time.perf_counter()
    await index.clear()  # marks the index as being built, so that the clear after the run looks
    builder = IndexBuilder(index.prefix)
    for i in range(0, len(raw_helpers), LOAD_CHUNK):
        chunk = raw_helpers[i : i + LOAD_CHUNK]
        changes = ((r["org"], r["id"], record(r)) for r in chunk)
        await send(index.redis, builder.plan(changes, _unreadable))
        if i and i % 200_000 == 0:
            log(f"  redis: {i:,} profiles written")
    log("  redis: writing the sets")
    await send(index.redis, set_writes(index.prefix, builder.entries(1)))
    return time.perf_counter() - started


def _unreadable(org: str, helper_id: str, exc: Exception) -> None:
    raise ValueError(f"generated helper {org}/{helper_id} is unreadable: {exc!r}")


def percentiles(h: HdrHistogram) -> dict[str, float]:
    return {
        "p50_ms": h.get_value_at_percentile(50) / 1000,
        "p99_ms": h.get_value_at_percentile(99) / 1000,
        "mean_ms": round(h.get_mean_value() / 1000, 3),
    }


async def leanon_latency(matcher: Matcher, requests: list[Request]) -> dict[str, Any]:
    for r in requests[:50]:  # warm-up: connections, scripts, caches
        await matcher.rank(r)
    hist = HdrHistogram(1, 10_000_000, 3)  # microseconds
    eligible = 0
    for r in requests:
        started = time.perf_counter()
        ranking = await matcher.rank(r)
        hist.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
        eligible += len(ranking.ranked)
    return {
        **percentiles(hist),
        "queries": len(requests),
        "mean_eligible": round(eligible / len(requests), 1),
    }


async def batch_vs_greedy(
    matcher: Matcher, requests: list[Request], capacity: dict[str, int]
) -> dict[str, Any]:
    """One busy hour in one city: many requests at once, helpers of limited capacity."""
    needs = []
    for r in requests:
        ranking = await matcher.rank(r)
        needs.append(Need(r, 1, ranking.ranked))
    remaining = {s.helper.id: capacity[s.helper.id] for n in needs for s in n.ranked}
    out: dict[str, Any] = {"requests": len(requests), "candidate_helpers": len(remaining)}
    for name, joint in (("batch", True), ("greedy", False)):
        started = time.perf_counter()
        chosen = assign(needs, remaining, joint=joint)
        elapsed = time.perf_counter() - started
        load = Counter(s.helper.id for picks in chosen for s in picks)
        out[name] = {
            "total_score": round(total_score(chosen), 3),
            "fill_rate": round(sum(1 for c in chosen if c) / len(chosen), 4),
            "gini_load": round(gini([load.get(h, 0) for h in remaining]), 4),
            "helpers_used": len(load),
            "assign_ms": round(elapsed * 1000, 2),
        }
    return out


async def rebuild_time(
    redis_url: str, bootstrap: str, raw_helpers: list[dict[str, Any]], prefix: str
) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bench{os.getpid()}.{len(raw_helpers)}.helpers"  # new, whatever ran before
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 6, 1, topic_configs={"cleanup.policy": "compact"})])
    await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=512 * 1024,
        compression_type=None,
    )
    await producer.start()
    log(f"  kafka: producing {len(raw_helpers):,} helper records to {topic}")
    futures = []
    for i, raw in enumerate(raw_helpers):
        futures.append(
            await producer.send(topic, record_json(raw), key=f"{raw['org']}/{raw['id']}".encode())
        )
        if len(futures) >= 20_000:
            await asyncio.gather(*futures)
            futures = []
            if i % 200_000 < 20_000:
                log(f"  kafka: {i:,} produced")
    await asyncio.gather(*futures)
    await producer.stop()
    # A rebuild replays a topic written long before. Kafka's newly written segments are still
    # going to disk now, and that writeback (kernel time, charged to no process) would share
    # the two cores with the rebuild.
    log("  kafka: produced; waiting for the page cache to reach the disk (sync)")
    await asyncio.to_thread(os.sync)
    log("  rebuilding the index from the topic, in a fresh process as matching would ...")
    # Started as "-c", so that its planner processes do not import this file (and scipy,
    # psycopg, ...) as they start: `python -m leanon_matching`'s planners import no __main__.
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"import sys; sys.path.insert(0, {str(BENCH)!r}); import matching; matching.main()",
        "--rebuild-from",
        topic,
        "--rebuild-prefix",
        prefix + "rebuild.",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the rebuild process failed ({child.returncode})")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.delete_topics([topic])
    await admin.close()
    return cast(dict[str, Any], json.loads(out.decode().strip().splitlines()[-1]))


async def redis_cpu_seconds(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def rebuild_here(redis_url: str, bootstrap: str, topic: str, prefix: str) -> dict[str, Any]:
    """The rebuild a matching instance runs on an empty Redis, timed, with CPU per process:
    this one (sending to Redis), its planners (reading Kafka, planning), Redis and Kafka."""
    redis = Redis.from_url(redis_url, protocol=2)
    index = HelperIndex(redis, prefix)
    await index.clear()  # as ensure_index does: marks the build, so the clear below drops it
    kafka = shared_pids().get("kafka (shared)")
    kafka_before = cpu_seconds(kafka) if kafka else None
    redis_before = await redis_cpu_seconds(redis)
    started = time.perf_counter()
    records = await replay(index, bootstrap, topic)
    seconds = time.perf_counter() - started
    redis_cpu = await redis_cpu_seconds(redis) - redis_before
    kafka_after = cpu_seconds(kafka) if kafka else None
    own = resource.getrusage(resource.RUSAGE_SELF)
    planners = resource.getrusage(resource.RUSAGE_CHILDREN)  # joined when the rebuild ended
    await index.clear()
    await redis.aclose()

    def per_helper(cpu_s: float | None) -> float | None:
        return None if cpu_s is None else round(cpu_s / max(records, 1) * 1e6, 1)

    return {
        "helpers": records,
        "seconds": round(seconds, 1),
        "per_second": round(records / seconds),
        "planners": rebuild_module.PLANNERS,
        "planner_peak_rss_mb": round(planners.ru_maxrss / 1024),  # the largest planner's
        "cpu_us_per_helper": {
            "send": per_helper(own.ru_utime + own.ru_stime),
            "planners": per_helper(planners.ru_utime + planners.ru_stime),
            "redis": per_helper(redis_cpu),
            "kafka": per_helper(
                None if kafka_before is None or kafka_after is None else kafka_after - kafka_before
            ),
        },
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    redis_url = os.environ.get("LEANON_REDIS_URL", "redis://127.0.0.1:6379/0")
    bootstrap = os.environ.get("LEANON_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    redis = Redis.from_url(redis_url, protocol=2)
    config = MatchingConfig()
    results: dict[str, Any] = {"sizes": []}
    raw_requests = city.make_requests(args.requests, args.seed + 1)
    requests = [to_request(r) for r in raw_requests]
    for size in args.sizes:
        log(f"{size:,} helpers: generating (seed {args.seed})")
        raw_helpers = city.make_helpers(size, args.seed)
        helpers = [to_helper(h) for h in raw_helpers]
        # As long as the default prefix ("leanon."): key lengths, and so memory per helper,
        # as a default deployment has them (the earlier "bench<pid>.<size>." added 25 B).
        prefix = "lbench."
        index = HelperIndex(redis, prefix)
        before = await used_memory(redis)
        log(f"{size:,} helpers: loading the Redis index")
        load_s = await load_index(index, raw_helpers)
        memory = await used_memory(redis) - before
        matcher = Matcher(
            index=index,
            reservations=Reservations(redis, prefix),
            offers=None,  # type: ignore[arg-type]
            store=None,
            timers=None,
            publish=None,
            config=config,
        )  # type: ignore[arg-type]
        log(f"{size:,} helpers: LeanOn decisions for {len(requests):,} requests")
        leanon = await leanon_latency(matcher, requests)
        log(f"  LeanOn p50 {leanon['p50_ms']} ms, p99 {leanon['p99_ms']} ms")
        log(f"{size:,} helpers: PostGIS baseline")
        baseline = await asyncio.to_thread(postgis.measure, raw_helpers, raw_requests)
        log(f"  PostGIS p50 {baseline['p50_ms']} ms, p99 {baseline['p99_ms']} ms")
        entry: dict[str, Any] = {
            "helpers": size,
            "redis_load_s": round(load_s, 1),
            "redis_bytes_per_helper": round(memory / size, 1),
            "leanon": leanon,
            "postgis": baseline,
            "p99_speedup": round(baseline["p99_ms"] / max(leanon["p99_ms"], 1e-3), 1),
        }
        if size == min(args.sizes):
            # Contention shows best where helpers are few: one city, one busy hour.
            busy = city.make_requests(args.busy, args.seed + 2, cities=1)
            for r in busy:
                r["window_start"] = datetime(2026, 12, 7, 17, tzinfo=UTC)
                r["window_end"] = datetime(2026, 12, 7, 18, tzinfo=UTC)
            capacity = {h.id: h.capacity for h in helpers}
            entry["batch_vs_greedy"] = await batch_vs_greedy(
                matcher, [to_request(r) for r in busy], capacity
            )
            log(f"  batch vs greedy: {entry['batch_vs_greedy']}")
        await index.clear()  # a rebuild starts from an empty Redis: this index must not stay
        if size == max(args.sizes) and not args.no_rebuild:
            entry["rebuild"] = await rebuild_time(redis_url, bootstrap, raw_helpers, prefix)
            log(f"  rebuild: {entry['rebuild']}")
        results["sizes"].append(entry)
    await redis.aclose()
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [e["helpers"] for e in results["sizes"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, color in (("leanon", "tab:green"), ("postgis", "tab:gray")):
        for pct, style in (("p50_ms", "-o"), ("p99_ms", "--o")):
            ax.plot(
                sizes,
                [e[name][pct] for e in results["sizes"]],
                style,
                color=color,
                label=f"{'LeanOn' if name == 'leanon' else 'PostGIS'} {pct[:3]}",
            )
    ax.axhline(5, color="tab:red", linewidth=0.8, linestyle=":", label="goal: p99 ≤ 5 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("helpers")
    ax.set_ylabel("decision latency per request (ms)")
    ax.set_title("Matching decision latency: LeanOn (Redis index) vs PostGIS, same run")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--busy", type=int, default=300, help="requests in the batch comparison")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="10k and 100k helpers, 500 requests")
    parser.add_argument("--no-rebuild", action="store_true")
    parser.add_argument("--rebuild-from", help=argparse.SUPPRESS)  # the rebuild's own process
    parser.add_argument("--rebuild-prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rebuild_from:
        tune_gc()
        redis_url = os.environ.get("LEANON_REDIS_URL", "redis://127.0.0.1:6379/0")
        bootstrap = os.environ.get("LEANON_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
        stats = asyncio.run(
            rebuild_here(redis_url, bootstrap, args.rebuild_from, args.rebuild_prefix)
        )
        print(json.dumps(stats))
        return
    if args.quick:
        args.sizes, args.requests = [10_000, 100_000], 500
    started = time.time()
    tune_gc()  # as every LeanOn service does at start-up
    results = asyncio.run(run(args))
    results.update(
        benchmark="matching",
        command=" ".join(["python", *sys.argv]),
        seed=args.seed,
        requests=args.requests,
        machine=machine(),
        finished_at=datetime.now(UTC).isoformat(),
        duration_s=round(time.time() - started, 1),
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"matching-{stamp}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    plot(results, RESULTS / f"matching-{stamp}.png")
    log(f"wrote {out} and its plot")
    for e in results["sizes"]:
        print(
            f"{e['helpers']:>9,} helpers  LeanOn p50 {e['leanon']['p50_ms']:.2f} ms "
            f"p99 {e['leanon']['p99_ms']:.2f} ms | PostGIS p50 {e['postgis']['p50_ms']:.2f} ms "
            f"p99 {e['postgis']['p99_ms']:.2f} ms | x{e['p99_speedup']} | "
            f"{e['redis_bytes_per_helper']} B/helper"
        )


if __name__ == "__main__":
    main()
