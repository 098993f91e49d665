"""The baseline most platforms would build: PostgreSQL 15 + PostGIS, one query per request.

A throwaway cluster on 127.0.0.1 (Debian's postgresql-15-postgis-3, installed when missing),
a helpers table with a GiST index, skills and weekly slots in their own tables, and for each
request one query with the same hard constraints LeanOn applies (org, skills at level, within
the helper's radius, a shared language, availability over the window in the helper's zone).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
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

QUERY = """
SELECT h.id, ST_Distance(h.geog, r.p) AS metres
FROM helpers h, (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography AS p) r
WHERE h.org = %(org)s
  AND ST_DWithin(h.geog, r.p, %(max_radius_m)s)  -- a constant distance lets GiST help
  AND ST_DWithin(h.geog, r.p, h.radius_m)
  {skills}
  AND (cardinality(%(langs)s::text[]) = 0 OR h.languages && %(langs)s::text[])
  AND EXISTS (
    SELECT 1 FROM helper_slots t,
      LATERAL (SELECT %(start)s::timestamptz AT TIME ZONE h.timezone AS ls,
                      %(end)s::timestamptz AT TIME ZONE h.timezone AS le) w
    WHERE t.helper_id = h.id
      AND t.day = extract(isodow FROM w.ls)
      AND t.start_min <= extract(hour FROM w.ls) * 60 + extract(minute FROM w.ls)
      AND t.end_min >= extract(hour FROM w.le) * 60 + extract(minute FROM w.le))
ORDER BY metres
LIMIT 20
"""
SKILL = """AND EXISTS (SELECT 1 FROM helper_skills s{n}
                  WHERE s{n}.helper_id = h.id AND s{n}.skill = %(skill{n})s
                    AND s{n}.level >= %(level{n})s)"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] postgis: {message}", file=sys.stderr, flush=True)


def ensure_installed() -> None:
    if POSTGIS.exists():
        return
    log("installing Debian's postgresql-15-postgis-3 (once)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "postgresql-15-postgis-3"],
        check=True,
        env=env,
        capture_output=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """A throwaway PostgreSQL on loopback; yields its connection string."""
    ensure_installed()
    data = Path(tempfile.mkdtemp(prefix="leanon-pg-"))
    user = pwd.getpwnam("postgres")
    os.chown(data, user.pw_uid, user.pw_gid)
    port = free_port()

    def as_postgres(*cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True)

    as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    opts = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={data} "
        "-c shared_buffers=512MB -c fsync=off -c synchronous_commit=off "
        "-c max_wal_size=4GB -c work_mem=32MB -c maintenance_work_mem=512MB"
    )
    as_postgres(
        str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(data / "log"), "-w", "start"
    )
    try:
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    finally:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


def hhmm(value: str) -> int:
    return int(value[:2]) * 60 + int(value[3:5])


def load(conn: psycopg.Connection[Any], helpers: list[dict[str, Any]]) -> tuple[float, float]:
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        cur.execute("""
            CREATE TABLE helpers (id text PRIMARY KEY, org text NOT NULL, geog geography(Point),
                                  radius_m float8, languages text[], timezone text, capacity int);
            CREATE TABLE helper_skills (helper_id text, skill text, level int);
            CREATE TABLE helper_slots (helper_id text, day int, start_min int, end_min int);
        """)
        with cur.copy(
            "COPY helpers (id, org, geog, radius_m, languages, timezone, capacity) FROM STDIN"
        ) as copy:
            for i, h in enumerate(helpers):
                langs = "{" + ",".join(h["languages"]) + "}"
                copy.write_row(
                    (
                        h["id"],
                        h["org"],
                        f"SRID=4326;POINT({h['lon']} {h['lat']})",
                        h["radius_km"] * 1000,
                        langs,
                        h["timezone"],
                        h["capacity"],
                    )
                )
                if i and i % 250_000 == 0:
                    log(f"{i:,} helpers copied")
        with cur.copy("COPY helper_skills FROM STDIN") as copy:
            for h in helpers:
                for skill, level in h["skills"].items():
                    copy.write_row((h["id"], skill, level))
        with cur.copy("COPY helper_slots FROM STDIN") as copy:
            for h in helpers:
                for slot in h["weekly"]:
                    start, end = hhmm(slot["start"]), hhmm(slot["end"])
                    day = DAYS[slot["day"]]
                    if end <= start:  # crosses midnight: two rows, as a platform would store it
                        copy.write_row((h["id"], day, start, 1440))
                        copy.write_row((h["id"], day % 7 + 1, 0, end))
                    else:
                        copy.write_row((h["id"], day, start, end))
        loaded = time.perf_counter() - started
        cur.execute("""
            CREATE INDEX ON helpers USING gist (geog);
            CREATE INDEX ON helpers (org);
            CREATE INDEX ON helper_skills (skill, level, helper_id);
            CREATE INDEX ON helper_skills (helper_id);
            CREATE INDEX ON helper_slots (helper_id, day);
            ANALYZE;
        """)
    conn.commit()
    return loaded, time.perf_counter() - started - loaded


def query(r: dict[str, Any], max_radius_m: float) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters for one request: one EXISTS per required skill."""
    values: dict[str, Any] = {
        "lat": r["lat"],
        "lon": r["lon"],
        "org": r["org"],
        "max_radius_m": max_radius_m,
        "langs": r["languages"],
        "start": r["window_start"],
        "end": r["window_end"],
    }
    clauses = []
    for n, (skill, level) in enumerate(r["skills"].items()):
        clauses.append(SKILL.format(n=n))
        values[f"skill{n}"], values[f"level{n}"] = skill, level
    return QUERY.format(skills="\n  ".join(clauses)), values


def measure(helpers: list[dict[str, Any]], requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Load the helpers into a fresh cluster and time one query per request."""
    with cluster() as dsn, psycopg.connect(dsn) as conn:
        log(f"loading {len(helpers):,} helpers")
        load_s, index_s = load(conn, helpers)
        hist = HdrHistogram(1, 60_000_000, 3)  # microseconds
        max_radius = max(h["radius_km"] for h in helpers) * 1000
        found = 0
        with conn.cursor() as cur:
            for r in requests[:50]:  # warm-up: plans and caches
                cur.execute(*query(r, max_radius), prepare=True)
                cur.fetchall()
            for r in requests:
                started = time.perf_counter()
                cur.execute(*query(r, max_radius), prepare=True)
                rows = cur.fetchall()
                hist.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
                found += len(rows)
        return {
            "helpers": len(helpers),
            "load_s": round(load_s, 1),
            "index_s": round(index_s, 1),
            "p50_ms": hist.get_value_at_percentile(50) / 1000,
            "p99_ms": hist.get_value_at_percentile(99) / 1000,
            "mean_ms": round(hist.get_mean_value() / 1000, 3),
            "queries": len(requests),
            "mean_found": round(found / len(requests), 1),
        }


if __name__ == "__main__":
    import argparse
    import json

    import city

    parser = argparse.ArgumentParser(description="PostGIS baseline alone")
    parser.add_argument("--helpers", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    a = parser.parse_args()
    result = measure(
        city.make_helpers(a.helpers, a.seed), city.make_requests(a.requests, a.seed + 1)
    )
    print(json.dumps(result, indent=2))
