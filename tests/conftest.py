"""Shared fixtures: real Kafka and Redis (env first, Docker second, local processes third),
a unique topic prefix per test, and bounded waiting."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tier is the folder: tests/unit, tests/integration, tests/e2e."""
    for item in items:
        for tier in ("unit", "integration", "e2e"):
            if f"tests/{tier}/" in str(item.path).replace(os.sep, "/"):
                item.add_marker(getattr(pytest.mark, tier))


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    redis_url: str


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _redis_hostport(url: str) -> str:
    rest = url.split("://", 1)[1].split("@")[-1]
    return rest.split("/", 1)[0]


def _docker_usable() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Kafka and Redis: already running, in containers, or started here (and stopped at the
    end). Only tests that ask for it start anything, so unit tests need neither."""
    kafka = os.environ.get("LEANON_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    redis_url = os.environ.get("LEANON_REDIS_URL", "redis://127.0.0.1:6379/0")
    if _reachable(kafka) and _reachable(_redis_hostport(redis_url)):
        yield Infra(kafka, redis_url)
        _forget_topics(kafka)
        return
    if _docker_usable():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        with KafkaContainer().with_kraft() as k, RedisContainer() as r:
            host, port = r.get_container_host_ip(), r.get_exposed_port(6379)
            yield Infra(k.get_bootstrap_server(), f"redis://{host}:{port}/0")
        return
    subprocess.run([str(ROOT / "deploy/local/infra.sh"), "up"], check=True, timeout=300)
    try:
        yield Infra(kafka, redis_url)
        _forget_topics(kafka)
    finally:
        subprocess.run([str(ROOT / "deploy/local/infra.sh"), "down"], check=False, timeout=120)


PREFIXES: set[str] = set()  # every topic prefix this session made, for forget_topics


def new_prefix(kind: str = "t") -> str:
    """A fresh topic and key prefix, e.g. 'api1a2b3c4d.'; its topics go when the session ends."""
    made = f"{kind}{uuid.uuid4().hex[:8]}."
    PREFIXES.add(made)
    return made


@pytest.fixture
def prefix() -> str:
    """Topics and Redis keys of one test never meet another's."""
    return new_prefix()


def _forget_topics(bootstrap: str) -> None:
    """Delete the session's topics at its end. Kept, they pile up in a long-lived local Kafka
    (thousands after a few days of runs), and every partition costs the broker CPU."""
    if PREFIXES:
        with contextlib.suppress(Exception):  # a cleanup: it never fails the session
            asyncio.run(_delete_topics(bootstrap, tuple(PREFIXES)))


async def _delete_topics(bootstrap: str, prefixes: tuple[str, ...]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="leanon-tests")
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        for i in range(0, len(ours), 200):
            await admin.delete_topics(ours[i : i + 200])
    finally:
        await admin.close()


@pytest.fixture
async def redis(infra: Infra) -> AsyncIterator[Redis]:
    client = Redis.from_url(infra.redis_url, protocol=2)
    yield client
    await client.aclose()


async def wait_for(
    probe: Callable[[], Awaitable[T | None] | T | None],
    *,
    timeout: float = 20.0,  # noqa: ASYNC109 - a deadline for a polled condition
    what: str = "condition",
) -> T:
    """Poll `probe` (sync or async) until it returns something truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(infra: Infra, prefix: str, **extra: Any) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LEANON_KAFKA_BOOTSTRAP=infra.kafka_bootstrap,
        LEANON_REDIS_URL=infra.redis_url,
        LEANON_TOPIC_PREFIX=prefix,
        LEANON_TOPIC_PARTITIONS="3",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


@contextlib.asynccontextmanager
async def tap(
    infra: Infra, topics: list[str], on_record: Callable[[Any], None]
) -> AsyncIterator[None]:
    """Feed every record of the topics, from their start, to `on_record` in the background."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=infra.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()

    async def collect() -> None:
        async for record in consumer:
            on_record(record)

    task = asyncio.create_task(collect())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()


async def committed_offsets(infra: Infra, group: str) -> dict[int, int]:
    """The consumer group's committed offset per partition (partitions without one left out)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
