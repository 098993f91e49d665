"""Intake as its own process on real Kafka and Redis, for API, CloudEvents and fuzz tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient

from leanon_shared.replay import partitions_of
from tests.conftest import Infra, env_for, free_port

KEYS = {"alpha": "alpha-key-0123456789abcdef", "beta": "beta-key-0123456789abcdef"}
START_TIMEOUT_S = 45


@dataclass
class IntakeProcess:
    url: str
    prefix: str
    env: dict[str, str]
    log: Path

    def client(
        self, org: str | None = "alpha", headers: dict[str, str] | None = None
    ) -> httpx.AsyncClient:
        auth = {"Authorization": f"Bearer {KEYS[org]}"} if org else {}
        return httpx.AsyncClient(base_url=self.url, timeout=10, headers=auth | (headers or {}))

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"


@contextmanager
def intake_process(
    infra: Infra, prefix: str, log_dir: Path, **extra: Any
) -> Iterator[IntakeProcess]:
    port = free_port()
    env = env_for(
        infra,
        prefix,
        LEANON_INTAKE_PORT=port,
        LEANON_API_KEYS=",".join(f"{org}:{key}" for org, key in KEYS.items()),
        LEANON_WEBHOOK_ALLOW_HOSTS="",
        **extra,
    )
    log = log_dir / f"intake-{port}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "leanon_intake"], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
        yield IntakeProcess(url, prefix, env, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"intake exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # polling a process that is starting; bounded by the deadline
    raise AssertionError(f"intake not ready in {START_TIMEOUT_S}s: {log.read_text()[-3000:]}")


async def produce(
    infra: Infra,
    topic: str,
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
) -> None:
    """(key, value, headers) records, acknowledged by Kafka before this returns."""
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=headers)
            for key, value, headers in records
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()


async def read_topic(infra: Infra, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on the topic up to its end offsets now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=infra.kafka_bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        tps = await partitions_of(infra.kafka_bootstrap, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        todo = {tp for tp in tps if end[tp] > 0}
        deadline = time.monotonic() + 30
        while todo and time.monotonic() < deadline:
            for tp, batch in (await consumer.getmany(*todo, timeout_ms=500)).items():
                records.extend(r for r in batch if r.offset < end[tp])
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
        assert not todo, f"could not read {topic} to its end"
        return records
    finally:
        await consumer.stop()


async def consumed_to_end(infra: Infra, topic: str, group: str) -> bool:
    """True once the group has committed every record now on the topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.kafka_bootstrap, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await consumer.start()
    await admin.start()
    try:
        tps = await partitions_of(infra.kafka_bootstrap, topic)
        end = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        return all(
            end[tp] == 0 or (tp in committed and committed[tp].offset >= end[tp]) for tp in tps
        )
    finally:
        await admin.close()
        await consumer.stop()


def structured(event: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    return orjson.dumps(event), [("content-type", b"application/cloudevents+json")]


def request_body(**changes: Any) -> dict[str, Any]:
    """A valid POST /v1/requests body for tomorrow, with `changes` on top."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    body: dict[str, Any] = {
        "skills": {"first_aid": 2},
        "location": {"lat": 52.51, "lon": 13.39},
        "window": {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
        "description": "carry groceries",
    }
    return body | changes
