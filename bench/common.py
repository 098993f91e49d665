"""What every benchmark shares: progress lines, machine facts, percentiles, result files."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httptools
from hdrh.histogram import HdrHistogram

RESULTS = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "commit": commit,
        # The machine is shared: what else ran shows here, and in the numbers.
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def histogram() -> HdrHistogram:
    """Microseconds from 1 µs to 10 minutes, three significant digits."""
    return HdrHistogram(1, 600_000_000, 3)


def percentiles(h: HdrHistogram) -> dict[str, float]:
    return {
        "p50_ms": round(h.get_value_at_percentile(50) / 1000, 2),
        "p99_ms": round(h.get_value_at_percentile(99) / 1000, 2),
        "p999_ms": round(h.get_value_at_percentile(99.9) / 1000, 2),
        "max_ms": round(h.get_max_value() / 1000, 2),
        "count": h.get_total_count(),
    }


def write_results(name: str, results: dict[str, Any]) -> Path:
    """bench/results/<name>-<UTC stamp>.json, with the command and the machine."""
    results.setdefault("command", " ".join(["python", *sys.argv]))
    results.setdefault("machine", machine())
    results.setdefault("finished_at", datetime.now(UTC).isoformat())
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{name}-{stamp}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    return out


NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
UNAUTHORIZED = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"


class HttpSink(asyncio.Protocol):
    """A lean HTTP/1.1 keep-alive server for the benchmarks' webhook sinks.

    A sink must cost the machine as little as possible: it shares two cores with what it
    measures, and aiohttp's server spent ~0.5 ms of CPU on each post. This one parses with
    httptools (what uvicorn uses) and hands each request to `respond`, which returns the raw
    response bytes. Subclass it and give `respond`; serve it with loop.create_server.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.signature = b""

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-leanon-signature":
            self.signature = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        self.transport.write(
            self.respond(self.parser.get_method(), self.url, self.signature.decode(), body)
        )

    def respond(self, method: bytes, url: bytes, signature: str, body: bytes) -> bytes:
        raise NotImplementedError


async def forget_prefix(bootstrap: str, redis_url: str, prefix: str) -> None:
    """Delete a run's topics and Redis keys (only its own: a fresh random prefix). Left
    behind, topics pile up in a long-lived local Kafka, and every partition costs it CPU."""
    from aiokafka.admin import AIOKafkaAdminClient
    from redis.asyncio import Redis

    with contextlib.suppress(Exception):  # a cleanup: it never fails a run
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()
    with contextlib.suppress(Exception):
        redis = Redis.from_url(redis_url, protocol=2)
        try:
            batch: list[bytes] = []
            async for key in redis.scan_iter(match=f"{prefix}*", count=20_000):
                batch.append(key)
                if len(batch) >= 2000:
                    await redis.unlink(*batch)
                    batch.clear()
            if batch:
                await redis.unlink(*batch)
        finally:
            await redis.aclose()


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """A process's CPU seconds, with those of the children it has waited for: Redis rewrites
    its append-only file in a child, whose seconds would otherwise vanish when it ends (and a
    phase's figure for Redis go negative)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # utime + stime + cutime + cstime
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and of the children it has now (a server's worker processes)."""
    total = cpu_seconds(pid) or 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(tree_cpu_seconds(int(child)) for child in children)


def _machine_ticks() -> list[int]:
    """The machine's CPU time so far, in ticks: user, nice, system, idle, iowait, irq, softirq,
    steal, guest, guest_nice (the first line of /proc/stat)."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def machine_stolen() -> tuple[float, float]:
    """(stolen, total) CPU seconds of the whole machine so far; stolen is the time the
    hypervisor gave this VM's CPUs to someone else (vmstat's `st`), which no process here
    sees as its own but every one of them waits through."""
    values = _machine_ticks()
    return values[7] / CLK_TCK, sum(values[:8]) / CLK_TCK


# Above this share of the machine's CPU taken by the host during a phase, the phase measured
# the neighbours as much as the code.
STOLEN_NOTED_PCT = 10.0


def stolen_pct(since: tuple[float, float]) -> float:
    """The share (%) of the machine's CPU time the host took since `since` (machine_stolen())."""
    stolen, total = (b - a for a, b in zip(since, machine_stolen(), strict=True))
    return round(100 * stolen / max(total, 1e-9), 1)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    values = _machine_ticks()
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


def process_age_s(pid: int) -> float | None:
    """Seconds since the process started (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return uptime - int(fields[19]) / CLK_TCK  # field 22 of stat: start time, in ticks


# A broker started moments ago (by `make bench`, say) spends over a core warming up (most likely
# JIT compilation) during its first minute or two of traffic: the benchmarks give one younger
# than this some unmeasured traffic first.
KAFKA_YOUNG_S = 300


def young_kafka_age() -> float | None:
    """Seconds since the local Kafka (see shared_pids) started, when that is less than
    KAFKA_YOUNG_S; None for an older broker, or none found."""
    pid = shared_pids().get("kafka (shared)")
    age = process_age_s(pid) if pid else None
    return age if age is not None and age < KAFKA_YOUNG_S else None


def redis_url() -> str:
    """The Redis the services use (LEANON_REDIS_URL), as the benches read it."""
    return os.environ.get("LEANON_REDIS_URL", "redis://127.0.0.1:6379/0")


def shared_pids() -> dict[str, int]:
    """Kafka and Redis are shared with others on this machine: read-only CPU sampling. The
    Redis is the one at LEANON_REDIS_URL (it tells its own pid: another redis-server may run
    beside it), the Kafka the one whose data directory is named after the bootstrap port."""
    found: dict[str, int] = {}
    with contextlib.suppress(Exception):  # not reachable: no figure rather than a wrong one
        from redis import Redis

        client = Redis.from_url(redis_url(), socket_timeout=5)
        found["redis (shared)"] = int(client.info("server")["process_id"])
        client.close()
    port = os.environ.get("LEANON_KAFKA_BOOTSTRAP", "127.0.0.1:9092").rsplit(":", 1)[-1]
    kafkas: list[tuple[bool, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in cmd:
            kafkas.append((f"kafka-{port}/".encode() in cmd, int(entry.name)))
    ours = [pid for named, pid in kafkas if named]
    if ours or len(kafkas) == 1:  # one Kafka started some other way is ours too
        found["kafka (shared)"] = (ours or [kafkas[0][1]])[0]
    return found


async def redis_rewrites(redis: Any) -> int:
    """How many times Redis has rewritten its files so far (AOF rewrites and RDB saves, one
    under way included). Each forks Redis and writes its whole dataset: on a 2-core machine a
    rewrite of a few hundred MB takes a core for seconds, in the middle of whatever phase it
    falls in."""
    info = await redis.info("persistence")
    return sum(
        int(info.get(k, 0))
        for k in ("aof_rewrites", "rdb_saves", "aof_rewrite_in_progress", "rdb_bgsave_in_progress")
    )


# The append-only file may grow by this much before a phase, no more: a phase of the benches
# writes less than half of Redis's default rewrite trigger (64 MB, and doubling since the last).
AOF_HEADROOM = 16 * 2**20


async def rewritten_first(redis: Any, timeout_s: float = 60.0) -> bool:
    """Rewrite Redis's append-only file now, and wait for it, when it has grown since its last
    rewrite by more than AOF_HEADROOM: so that Redis's own housekeeping (which in a deployment
    runs on Redis's machine, not on the service's cores) does not fall inside the phase about
    to be measured on this shared machine. True when it rewrote. The rewrites that happen all
    the same are still counted (`redis_rewrites`)."""
    info = await redis.info("persistence")
    grown = int(info.get("aof_current_size", 0)) - int(info.get("aof_base_size", 0))
    if not int(info.get("aof_enabled", 0)) or grown <= AOF_HEADROOM:
        return False
    if not int(info.get("aof_rewrite_in_progress", 0)):
        with contextlib.suppress(Exception):  # "already in progress": wait for that one
            await redis.bgrewriteaof()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = await redis.info("persistence")
        busy = ("aof_rewrite_in_progress", "aof_rewrite_scheduled")
        if not any(int(info.get(k, 0)) for k in busy):
            return True
        await asyncio.sleep(0.1)
    log(f"Redis's rewrite of its append-only file took over {timeout_s:.0f} s; going on")
    return True


# A Redis holding more keys than this (left by runs that were killed, or by scratch scripts)
# makes each of its rewrites long enough to show in a benchmark's numbers.
CROWDED_REDIS_KEYS = 100_000


async def redis_keys_before(redis: Any) -> int:
    """How many keys Redis holds as a run starts, with a warning when they are so many that
    its rewrites will show in the results."""
    keys = int(await redis.dbsize())
    if keys > CROWDED_REDIS_KEYS:
        log(
            f"Redis holds {keys:,} keys before this run (leftovers?): its rewrites will take"
            " seconds of CPU in the middle of phases"
        )
    return keys


def quiet_gc() -> None:
    """Collect now, then keep the cycle collector from running mid-phase. In the notification
    bench's own publisher and sink a full collection over the prebuilt records and the noted
    posts took 110-290 ms: a stall that the sink then measured as the service's latency (and
    as the raw client's). Reference counting still frees nearly everything at once; call this
    again between phases to collect what cycles there were."""
    gc.enable()
    gc.collect()
    gc.freeze()
    gc.disable()
