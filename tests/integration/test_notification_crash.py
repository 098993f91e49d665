"""SIGKILL between delivering and committing, restart: the receiver sees each event once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
from redis.asyncio import Redis

from tests.conftest import Infra, committed_offsets, env_for, free_port, wait_for
from tests.integration.notify_rig import DELAYS, SECRET, collecting, notification_settings, receiver

EVENTS = 30
TAKEN_BEFORE_KILL = 10


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "leanon_notification"], env=env, stdout=out, stderr=out
        )


async def ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_sigkill_between_delivering_and_committing(
    infra: Infra, prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = env_for(
        infra,
        prefix,
        LEANON_NOTIFICATION_PORT=port,
        LEANON_WEBHOOK_SECRET=SECRET,
        LEANON_WEBHOOK_ALLOW_HOSTS="127.0.0.1",
        LEANON_WEBHOOK_TIMEOUT_S=2,
        LEANON_RETRY_DELAYS_S=DELAYS,
        # Long enough that nothing is committed before the kill: every delivered event is
        # read again after the restart, and must not reach the receiver again.
        LEANON_COMMIT_INTERVAL_S=600,
    )
    log = tmp_path / "notification.log"
    settings = notification_settings(infra, prefix)
    async with receiver() as rec, collecting(infra, settings) as r:
        # The receiver takes the first ten, then stops answering (the rest are in flight).
        rec.script["/h"] = [204] * TAKEN_BEFORE_KILL + [("hold",)] * EVENTS
        await r.helper("h1", webhook_url=f"{rec.url}/h")
        first = start(env, log)
        try:
            await wait_for(lambda: ready(port), timeout=30, what="notification ready")
            events = [await r.offer("h1") for _ in range(EVENTS)]
            await wait_for(lambda: len(rec.taken("/h")) == TAKEN_BEFORE_KILL, what="ten delivered")
            sent = f"{prefix}sent:*"
            await wait_for(lambda: _count(r.redis, sent, TAKEN_BEFORE_KILL), what="their sent keys")
            assert (
                await committed_offsets(infra, f"{prefix}notification") == {}
            )  # nothing committed
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        rec.release()  # the stalled requests end unanswered: the receiver never took them
        second = start(env | {"LEANON_COMMIT_INTERVAL_S": "0.2"}, log)
        try:
            await wait_for(
                lambda: len({h.event["id"] for h in rec.taken("/h")}) == EVENTS,
                timeout=60,
                what="every event after the restart",
            )
            await wait_for(
                lambda: all(r.reports(e, "delivered") for e in events), what="every report"
            )
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
        taken = Counter(h.event["id"] for h in rec.taken("/h"))
        assert set(taken) == {e.id for e in events}
        assert max(taken.values()) == 1, f"delivered twice: {taken.most_common(3)}"
        assert all(h.signed_ok for h in rec.taken("/h"))


async def _count(redis: Redis, pattern: str, at_least: int) -> bool:
    keys = [
        k async for k in redis.scan_iter(match=pattern, count=1000) if not k.endswith(b":claim")
    ]
    return len(keys) >= at_least
