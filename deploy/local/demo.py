"""The `make run` demo: synthetic helpers around a city, a stream of requests, a live summary.

A local webhook sink plays every helper's phone: it accepts most offers and declines some,
so requests flow through offered -> matched (or unmatched, for skills nobody has).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from hdrh.histogram import HdrHistogram

CITY = (52.52, 13.405)  # Berlin
SKILLS = ["first_aid", "driving", "shopping", "translation", "childcare", "carpentry"]
RARE = "diving"  # nobody has it: shows an unmatched reason


class Stats:
    def __init__(self) -> None:
        self.sent = self.offered = self.matched = self.unmatched = self.failed = 0
        self.submitted_at: dict[str, float] = {}
        self.offer_ms = HdrHistogram(1, 120_000, 3)


def helper_body(rng: random.Random, sink: str, i: int) -> dict[str, object]:
    lat = CITY[0] + rng.gauss(0, 0.08)
    lon = CITY[1] + rng.gauss(0, 0.12)
    skills = {s: rng.randint(1, 5) for s in rng.sample(SKILLS, rng.randint(1, 3))}
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    return {
        "skills": skills,
        "languages": rng.sample(["de", "en", "tr", "ar", "uk"], rng.randint(1, 2)),
        "location": {"lat": lat, "lon": lon},
        "radius_km": rng.choice([5, 10, 15, 25]),
        "availability": {
            "timezone": "Europe/Berlin",
            "weekly": [{"day": d, "start": "07:00", "end": "22:00"} for d in days],
        },
        "capacity": rng.randint(1, 3),
        "contact": {"webhook_url": f"{sink}/helpers/h{i}"},
    }


def request_body(rng: random.Random, sink: str) -> dict[str, object]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(
        days=rng.randint(1, 6)
    )
    start = start.replace(hour=rng.randint(7, 18))
    skill = RARE if rng.random() < 0.03 else rng.choice(SKILLS)
    return {
        "skills": {skill: rng.randint(1, 3)},
        "location": {"lat": CITY[0] + rng.gauss(0, 0.06), "lon": CITY[1] + rng.gauss(0, 0.09)},
        "window": {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
        "urgency": rng.choice(["low", "normal", "normal", "high"]),
        "description": "Demo request",
        "contact": {"webhook_url": f"{sink}/requesters"},
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--helpers", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until Ctrl-C")
    parser.add_argument(
        "--sink-port", type=int, default=int(os.environ.get("LEANON_DEMO_SINK_PORT", 8090))
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    api = f"http://127.0.0.1:{os.environ.get('LEANON_INTAKE_PORT', '8000')}"
    key = os.environ["LEANON_API_KEYS"].split(",")[0].split(":", 1)[1]
    sink = f"http://127.0.0.1:{args.sink_port}"
    rng = random.Random(args.seed)
    stats = Stats()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # aiohttp: httpx's pool tops out near 200 requests/s on this machine.
    client = aiohttp.ClientSession(
        base_url=api,
        headers={"Authorization": f"Bearer {key}"},
        timeout=aiohttp.ClientTimeout(total=10),
        connector=aiohttp.TCPConnector(limit=64),
    )

    async def answer(offer_id: str) -> None:
        verb = "accept" if rng.random() < 0.85 else "decline"
        try:
            async with client.post(f"/v1/offers/{offer_id}/{verb}") as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            stats.failed += 1

    async def on_webhook(request: web.Request) -> web.Response:
        event = orjson.loads(await request.read())
        data = event.get("data") or {}
        if event["type"] == "org.leanon.offer.created":
            stats.offered += 1
            sent = stats.submitted_at.get(data.get("request_id", ""))
            if sent is not None:
                stats.offer_ms.record_value(max(1, int((time.time() - sent) * 1000)))
            spawn(answer(data["offer_id"]))
        elif event["type"] == "org.leanon.request.matched":
            stats.matched += 1
        elif event["type"] == "org.leanon.request.unmatched":
            stats.unmatched += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", on_webhook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.sink_port).start()

    print(f"seeding {args.helpers} helpers around Berlin ...", flush=True)
    sem = asyncio.Semaphore(32)

    async def put(i: int) -> None:
        async with sem, client.put(f"/v1/helpers/h{i}", json=helper_body(rng, sink, i)) as r:
            r.raise_for_status()

    t0 = time.time()
    await asyncio.gather(*(put(i) for i in range(args.helpers)))
    print(
        f"seeded in {time.time() - t0:.1f}s; streaming {args.rate:g} requests/s (Ctrl-C to stop)",
        flush=True,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def submit() -> None:
        try:
            async with client.post("/v1/requests", json=request_body(rng, sink)) as r:
                body = await r.json() if r.status == 202 else None
        except (aiohttp.ClientError, TimeoutError):
            stats.failed += 1
            return
        if body is not None:
            stats.submitted_at[body["id"]] = time.time()
            stats.sent += 1
        else:
            stats.failed += 1

    async def produce() -> None:
        interval, next_at = 1.0 / args.rate, time.perf_counter()
        while not stop.is_set():
            spawn(submit())
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def report() -> None:
        started, last_sent, last_t = time.time(), 0, time.time()
        header = (
            f"{'time':>6} {'req/s':>6} {'sent':>7} {'offered':>8} {'matched':>8} "
            f"{'unmatched':>9} {'offer p50':>9} {'offer p99':>9}"
        )
        print(header, flush=True)
        while not stop.is_set():
            await asyncio.sleep(2)
            now = time.time()
            rate = (stats.sent - last_sent) / (now - last_t)
            last_sent, last_t = stats.sent, now
            h = stats.offer_ms
            p50 = f"{h.get_value_at_percentile(50)}ms" if h.total_count else "-"
            p99 = f"{h.get_value_at_percentile(99)}ms" if h.total_count else "-"
            print(
                f"{now - started:>5.0f}s {rate:>6.1f} {stats.sent:>7} {stats.offered:>8} "
                f"{stats.matched:>8} {stats.unmatched:>9} {p50:>9} {p99:>9}",
                flush=True,
            )
            if args.duration and now - started >= args.duration:
                stop.set()

    await asyncio.gather(produce(), report())
    await client.close()
    await runner.cleanup()
    print(
        f"stopped: {stats.sent} sent, {stats.matched} matched, {stats.unmatched} unmatched",
        flush=True,
    )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
