"""Where a matching decision's time goes, at one population size, against a kept index.

Loads the seeded helpers once under the prefix `prof<N>.` (kept between runs of the same
index version, so a second run starts in seconds; `--drop` removes it), then ranks requests
and reports: latency, the Python CPU per decision, the Redis time of the candidate script
(INFO commandstats, so other clients of a shared Redis add to it), the commands it ran per
decision, and the cyclic collector's pauses. The machine is shared: compare runs made back
to back, never against a number from another day.

    python bench/profile_decisions.py 1000000
    python bench/profile_decisions.py 1000000 --drop
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

import city
from matching import load_index, to_request

from leanon_matching.index import HelperIndex
from leanon_matching.reservations import Reservations
from leanon_matching.service import Matcher, MatchingConfig
from leanon_shared.runtime import tune_gc


class Pauses:
    """The cyclic collector's runs and their total and longest pause."""

    def __init__(self) -> None:
        self.runs, self.total, self.longest, self._started = 0, 0.0, 0.0, 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.runs += 1
        self.total += pause
        self.longest = max(self.longest, pause)


def summary(h: HdrHistogram) -> str:
    p = [h.get_value_at_percentile(q) / 1000 for q in (50, 90, 99)]
    return (
        f"p50 {p[0]:.2f} / p90 {p[1]:.2f} / p99 {p[2]:.2f} / max {h.get_max_value() / 1000:.2f} ms"
    )


async def run(args: argparse.Namespace) -> None:
    tune_gc()
    redis = Redis.from_url(os.environ.get("LEANON_REDIS_URL", "redis://127.0.0.1:6379/0"))
    prefix = f"prof{args.helpers}."
    index = HelperIndex(redis, prefix)
    if args.drop:
        print(f"dropped {await index.clear()} keys")
        return
    if not await index.is_current():
        seconds = await load_index(index, city.make_helpers(args.helpers, args.seed))
        await index.mark_current()
        print(f"indexed {args.helpers:,} helpers in {seconds:.0f} s")
    gc.collect()
    requests = [to_request(r) for r in city.make_requests(args.requests, args.seed + 1)]
    matcher = Matcher(
        index=index,
        reservations=Reservations(redis, prefix),
        offers=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        timers=None,  # type: ignore[arg-type]
        publish=None,  # type: ignore[arg-type]
        config=MatchingConfig(),
    )
    for r in requests[:100]:
        await matcher.rank(r)
    pauses = Pauses()
    gc.callbacks.append(pauses)
    before = await redis.info("commandstats")
    latency, examined, cpu = HdrHistogram(1, 10_000_000, 3), 0, time.process_time()
    for r in requests:
        started = time.perf_counter()
        examined += (await matcher.rank(r)).examined
        latency.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
    cpu = time.process_time() - cpu
    after = await redis.info("commandstats")
    gc.callbacks.remove(pauses)
    n = len(requests)
    print(f"decision: {summary(latency)}; {examined / n:.1f} candidates examined")
    print(f"python CPU per decision: {cpu / n * 1e6:.0f} us")
    print(
        f"collector: {pauses.runs} runs, {pauses.total * 1000:.0f} ms in all, "
        f"longest {pauses.longest * 1000:.1f} ms"
    )
    print("Redis per decision (commandstats; includes other clients):")
    for name, stats in sorted(after.items()):
        old = before.get(name, {"calls": 0, "usec": 0})
        calls = stats["calls"] - old["calls"]
        if calls:
            usec = (stats["usec"] - old["usec"]) / n
            print(f"  {name.removeprefix('cmdstat_'):14s} {calls / n:7.1f} calls {usec:8.0f} us")
    ping = HdrHistogram(1, 10_000_000, 3)
    for _ in range(1000):
        started = time.perf_counter()
        await redis.ping()
        ping.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
    print(f"PING round trip: {summary(ping)}")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("helpers", type=int)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drop", action="store_true", help="remove the kept index and stop")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
