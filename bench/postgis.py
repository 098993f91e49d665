"""The baseline most platforms would build: PostgreSQL 15 + PostGIS, one SQL query per request.

A throwaway cluster on 127.0.0.1 (Debian's postgresql-15-postgis-3, installed when missing), the
helpers in a table with a GiST index, their skills and weekly slots in two more tables, and for
each request one query with the hard constraints: same org, every skill at level, within the
helper's radius, a shared language when asked, a weekly slot covering the window in the helper's
zone (same-day windows only); nearest first, 20 at most.

    python bench/postgis.py --helpers 10000 --requests 2000 --seed 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from hdrh.histogram import HdrHistogram

PG_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGIS = Path("/usr/share/postgresql/15/extension/postgis.control")
DAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}  # ISO weekday
LIMIT = 20
WARMUP = 50
# Server settings: a dedicated, durable-enough-for-a-benchmark box of this size. JIT is off as
# any OLTP deployment has it; with it on, the planner's high cost estimates for the bigger
# populations compile each query for tens of milliseconds.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "shared_buffers": "1GB",
    "effective_cache_size": "4GB",
    "work_mem": "32MB",
    "maintenance_work_mem": "1GB",
    "max_wal_size": "8GB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "random_page_cost": "1.1",
    "jit": "off",
}

POINT = "ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography"
# ST_DWithin with a per-row radius cannot use the GiST index, so a constant bound (the largest
# radius) goes first; `<->` then walks the index nearest first and stops at the LIMIT.
QUERY = f"""
SELECT h.id, ST_Distance(h.geog, {POINT}) AS metres
FROM helpers h
WHERE h.org = %(org)s
  AND ST_DWithin(h.geog, {POINT}, %(max_radius_m)s)
  AND ST_DWithin(h.geog, {POINT}, h.radius_m)
  {{skills}}
  {{languages}}
  AND EXISTS (
    SELECT 1
    FROM (SELECT %(start)s::timestamptz AT TIME ZONE h.timezone AS ls) w,
         LATERAL (SELECT extract(isodow FROM w.ls)::int AS day,
                         (extract(hour FROM w.ls) * 60 + extract(minute FROM w.ls))::int AS m) l,
         helper_slots t
    WHERE t.helper_id = h.id AND t.day = l.day
      AND t.start_min <= l.m AND t.end_min >= l.m + %(minutes)s)
ORDER BY h.geog <-> {POINT}
LIMIT {LIMIT}
"""
SKILL = """AND EXISTS (SELECT 1 FROM helper_skills s
              WHERE s.helper_id = h.id AND s.skill = %(skill{n})s AND s.level >= %(level{n})s)"""
LANGUAGES = "AND h.languages && %(languages)s::text[]"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] postgis: {message}", file=sys.stderr, flush=True)


def ensure_installed() -> None:
    """Install Debian's PostgreSQL 15 with PostGIS 3 when it is missing (needs root)."""
    if POSTGIS.exists() and (PG_BIN / "initdb").exists():
        return
    log("installing postgresql-15-postgis-3 with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "postgresql-15-postgis-3"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(install, check=True, env=env, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def cluster(data_root: Path | None = None) -> Iterator[str]:
    """A throwaway PostgreSQL 15 on 127.0.0.1 and a free port; yields its connection string.

    As root it runs as the `postgres` OS user (initdb refuses root); the data directory is a
    fresh temporary one (under `data_root` when given) and is removed on exit."""
    ensure_installed()
    data = Path(tempfile.mkdtemp(prefix="leanon-pg-", dir=data_root))
    prefix: list[str] = []
    user = "postgres"
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    else:
        user = pwd.getpwuid(os.geteuid()).pw_name

    def run(*cmd: str) -> None:
        done = subprocess.run([*prefix, *cmd], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {done.stderr or done.stdout}")

    port = free_port()
    run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "-E", "UTF8")
    opts = " ".join(f"-c {k}={v}" for k, v in {**SETTINGS, "port": port}.items())
    opts += f" -c unix_socket_directories={data}"
    pg_ctl = str(PG_BIN / "pg_ctl")
    run(pg_ctl, "-D", str(data), "-o", opts, "-l", str(data / "log"), "-w", "start")
    try:
        yield f"host=127.0.0.1 port={port} user={user} dbname=postgres"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


def _minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:5])


def load(conn: psycopg.Connection[Any], helpers: list[dict[str, Any]]) -> tuple[float, float]:
    """Create the schema, COPY the helpers in, then index and analyse; (load_s, index_s)."""
    started = time.perf_counter()
    step = max(100_000, len(helpers) // 5)
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        cur.execute("""
            CREATE TABLE helpers (id text PRIMARY KEY, org text NOT NULL, geog geography(Point),
                                  radius_m float8, languages text[], timezone text, capacity int);
            CREATE TABLE helper_skills (helper_id text, skill text, level int);
            CREATE TABLE helper_slots (helper_id text, day int, start_min int, end_min int);
        """)
        columns = "id, org, geog, radius_m, languages, timezone, capacity"
        with cur.copy(f"COPY helpers ({columns}) FROM STDIN") as copy:
            for i, h in enumerate(helpers):
                point = f"SRID=4326;POINT({h['lon']} {h['lat']})"
                row = (h["id"], h["org"], point, h["radius_km"] * 1000.0)
                copy.write_row((*row, h["languages"], h["timezone"], h["capacity"]))
                if i and i % step == 0:
                    log(f"{i:,} helpers copied")
        with cur.copy("COPY helper_skills FROM STDIN") as copy:
            for h in helpers:
                for skill, level in h["skills"].items():
                    copy.write_row((h["id"], skill, level))
        log("skills copied")
        with cur.copy("COPY helper_slots FROM STDIN") as copy:
            for h in helpers:
                for slot in h["weekly"]:
                    start, end, day = _minutes(slot["start"]), _minutes(slot["end"]), slot["day"]
                    if end <= start:  # crosses midnight: two rows, as a platform would store it
                        copy.write_row((h["id"], DAYS[day], start, 1440))
                        copy.write_row((h["id"], DAYS[day] % 7 + 1, 0, end))
                    else:
                        copy.write_row((h["id"], DAYS[day], start, end))
        log("slots copied")
    conn.commit()
    loaded = time.perf_counter() - started
    log(f"loaded in {loaded:.1f}s; indexing")
    with conn.cursor() as cur:
        cur.execute("""
            CREATE INDEX helpers_geog ON helpers USING gist (geog);
            CREATE INDEX helper_skills_skill ON helper_skills (skill, level, helper_id);
            CREATE INDEX helper_skills_helper ON helper_skills (helper_id, skill, level);
            CREATE INDEX helper_slots_helper ON helper_slots (helper_id, day);
        """)
    conn.commit()
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE")  # what autovacuum would have done on a live system
    conn.autocommit = False
    return loaded, time.perf_counter() - started - loaded


def query(r: dict[str, Any], max_radius_m: float) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters for one request: one EXISTS per required skill."""
    values: dict[str, Any] = {
        "lat": r["lat"],
        "lon": r["lon"],
        "org": r["org"],
        "max_radius_m": max_radius_m,
        "start": r["window_start"],
        "minutes": int((r["window_end"] - r["window_start"]).total_seconds() // 60),
    }
    skills = []
    for n, (skill, level) in enumerate(r["skills"].items()):
        skills.append(SKILL.format(n=n))
        values[f"skill{n}"], values[f"level{n}"] = skill, level
    languages = ""
    if r["languages"]:
        languages = LANGUAGES
        values["languages"] = list(r["languages"])
    return QUERY.format(skills="\n  ".join(skills), languages=languages), values


def measure(
    helpers: list[dict[str, Any]], requests: list[dict[str, Any]], data_root: Path | None = None
) -> dict[str, Any]:
    """Load the helpers into a fresh cluster, warm up, and time one query per request."""
    with cluster(data_root) as dsn, psycopg.connect(dsn) as conn:
        log(f"loading {len(helpers):,} helpers")
        load_s, index_s = load(conn, helpers)
        log(f"indexed in {index_s:.1f}s; {len(requests):,} queries")
        conn.autocommit = True  # one statement per request, no transaction around it
        max_radius_m = max(h["radius_km"] for h in helpers) * 1000.0
        hist = HdrHistogram(1, 60_000_000, 3)  # microseconds
        found = empty = 0
        with conn.cursor() as cur:
            for r in requests[:WARMUP]:  # plans, caches, prepared statements
                cur.execute(*query(r, max_radius_m))
                cur.fetchall()
            for r in requests:
                sql, values = query(r, max_radius_m)
                started = time.perf_counter()
                cur.execute(sql, values)
                rows = cur.fetchall()
                hist.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
                found += len(rows)
                empty += not rows
        return {
            "helpers": len(helpers),
            "load_s": round(load_s, 1),
            "index_s": round(index_s, 1),
            "p50_ms": hist.get_value_at_percentile(50) / 1000,
            "p99_ms": hist.get_value_at_percentile(99) / 1000,
            "mean_ms": round(hist.get_mean_value() / 1000, 3),
            "queries": len(requests),
            "mean_candidates": round(found / max(1, len(requests)), 1),
            "no_match": empty,
        }


def main() -> None:
    import city

    parser = argparse.ArgumentParser(description="The PostgreSQL + PostGIS baseline alone")
    parser.add_argument("--helpers", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cities", type=int, default=len(city.CITIES))
    a = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the cluster is stopped
    started = time.perf_counter()
    helpers = city.make_helpers(a.helpers, a.seed, a.cities)
    requests = city.make_requests(a.requests, a.seed + 1, a.cities)
    log(f"workload generated in {time.perf_counter() - started:.1f}s")
    print(json.dumps(measure(helpers, requests), indent=2))


if __name__ == "__main__":
    main()
