"""The three services as processes, started by deploy/local/services.sh as `make up` does,
and a real webhook receiver that checks every signature."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from redis.asyncio import Redis

from leanon_notification.signing import HEADER, verify
from tests.conftest import ROOT, Infra, env_for, free_port, new_prefix, wait_for

SECRET = "e2e-webhook-secret-0123456789"
KEYS = {"alpha": "alpha-key-0123456789abcdef", "beta": "beta-key-0123456789abcdef"}


@dataclass
class Stack:
    intake: str
    env: dict[str, str]
    run_dir: Path

    async def indexed(self, org: str, helper_id: str) -> None:
        """Wait until matching has the helper in its index: helpers and requests travel on
        different topics, so a request sent at once may otherwise be searched first."""
        redis = Redis.from_url(self.env["LEANON_REDIS_URL"], protocol=2)
        key = f"{self.env['LEANON_TOPIC_PREFIX']}h:{org}:{helper_id}"
        try:
            await wait_for(lambda: redis.exists(key), what=f"helper {helper_id} indexed")
        finally:
            await redis.aclose()

    def client(self, org: str = "alpha") -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.intake, timeout=10, headers={"Authorization": f"Bearer {KEYS[org]}"}
        )


@pytest.fixture(scope="module")
def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:

    run_dir = tmp_path_factory.mktemp("run")
    ports = {name: free_port() for name in ("intake", "matching", "notification")}
    env = env_for(
        infra,
        new_prefix("e2e"),
        LEANON_RUN_DIR=run_dir,
        LEANON_INTAKE_PORT=ports["intake"],
        LEANON_MATCHING_PORT=ports["matching"],
        LEANON_NOTIFICATION_PORT=ports["notification"],
        LEANON_API_KEYS=",".join(f"{org}:{key}" for org, key in KEYS.items()),
        LEANON_WEBHOOK_SECRET=SECRET,
        LEANON_WEBHOOK_ALLOW_HOSTS="127.0.0.1",
        LEANON_OFFER_TTL_S=3,
    )
    script = str(ROOT / "deploy/local/services.sh")
    try:  # stop runs even when start times out half-way
        started = subprocess.run(
            [script, "start"], env=env, capture_output=True, text=True, timeout=50
        )
        assert started.returncode == 0, started.stderr
        yield Stack(f"http://127.0.0.1:{ports['intake']}", env, run_dir)
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120)


@dataclass
class Receiver:
    url: str
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    bad_signatures: int = 0

    def events(self, path: str, type_: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.received.get(path, []) if type_ is None or e["type"] == type_]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    rec = Receiver(f"http://127.0.0.1:{port}")

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(body, request.headers.get(HEADER, ""), SECRET.encode()):
            rec.bad_signatures += 1
            return web.Response(status=401)
        rec.received.setdefault(request.path, []).append(orjson.loads(body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield rec
    await runner.cleanup()
