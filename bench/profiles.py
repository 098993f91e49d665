"""Read py-spy's raw (collapsed) profiles: where a service's samples went, by library.

Each sample is charged to the code that asked for the work: the innermost frame outside the
standard library, below the process's start-up frames (uvicorn.run, asyncio.run). A `json.loads`
called by LeanOn is LeanOn's. Two groups cut across that: writes to a socket through asyncio's
streams (every Kafka and Redis request; the busiest single frame of each service at moderate
rates), and samples with nothing but the standard library on the stack (uvloop's own
loop, which py-spy shows as `Runner.run`, and bare asyncio machinery), the event loop's.

    python bench/profiles.py FILE...     # a table per file
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path
from typing import Any

# What a frame's top-level package is charged as; anything else is "other libraries".
GROUPS = {
    "leanon_intake": "LeanOn",
    "leanon_matching": "LeanOn",
    "leanon_notification": "LeanOn",
    "leanon_shared": "LeanOn",
    "aiokafka": "aiokafka",
    "kafka": "aiokafka",
    "redis": "redis-py",
    "hiredis": "redis-py",
    "faststream": "FastStream",
    "fast_depends": "FastStream",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "fastapi": "HTTP server (uvicorn, Starlette, FastAPI)",
    "starlette": "HTTP server (uvicorn, Starlette, FastAPI)",
    "uvicorn": "HTTP server (uvicorn, Starlette, FastAPI)",
    "httptools": "HTTP server (uvicorn, Starlette, FastAPI)",
    "prometheus_client": "metrics (prometheus_client)",
    "orjson": "LeanOn",  # called by LeanOn; C code, rarely seen
}
EVENT_LOOP = "event loop and standard library"
SOCKET_WRITES = "socket writes (Kafka, Redis)"
WRITES = ("StreamWriter.write (asyncio/streams.py", "StreamWriter.writelines (asyncio/streams.py")
ROOT = "Runner.run (asyncio/runners.py"  # below it: the process's start-up frames
STDLIB = frozenset(sys.stdlib_module_names) | {"<frozen runpy>", "uvloop", "<string>"}


def _package(frame: str) -> str:
    """'Matcher.rank (leanon_matching/service.py:188)' -> 'leanon_matching'."""
    where = frame.rpartition(" (")[2].rstrip(")")
    path = where.rpartition(":")[0] or where
    if path.startswith("<"):
        return path
    return path.split("/", 1)[0].removesuffix(".py")


def _charged_to(frames: list[str]) -> str:
    if frames[-1].startswith(WRITES):
        return SOCKET_WRITES
    for frame in reversed(frames):
        if frame.startswith(ROOT):
            break
        package = _package(frame)
        if package not in STDLIB:
            return GROUPS.get(package, "other libraries")
    return EVENT_LOOP


def summarize(path: Path, top: int = 8) -> dict[str, Any]:
    """{"samples", "by_group": {group: percent}, "top_frames": [[percent, frame], ...]}."""
    groups: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        total += n
        groups[_charged_to(frames)] += n
        leaves[frames[-1]] += n
    if not total:
        return {"samples": 0, "by_group": {}, "top_frames": []}
    return {
        "samples": total,
        "by_group": {g: round(100 * n / total, 1) for g, n in groups.most_common()},
        "top_frames": [[round(100 * n / total, 1), f] for f, n in leaves.most_common(top)],
    }


def main() -> None:
    for name in sys.argv[1:]:
        summary = summarize(Path(name))
        print(f"{name}: {summary['samples']} samples")
        for group, percent in summary["by_group"].items():
            print(f"  {percent:5.1f}%  {group}")
        print("  busiest frames (own time):")
        for percent, frame in summary["top_frames"]:
            print(f"  {percent:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
