"""CloudEvents on {prefix}intake from other systems, on real Kafka and Redis: what the official
SDK writes (binary and structured), what a shell tool writes, duplicates, and anything malformed
(which must land in the DLQ with a reason while the events behind it still get through)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from cloudevents.v1 import kafka as ce_kafka_v1
from cloudevents.v1.http import CloudEvent as SdkEventV1
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from leanon_shared.offers import OfferRecord, OfferRecords
from tests.conftest import ROOT, Infra, new_prefix, wait_for
from tests.integration.intake_rig import (
    IntakeProcess,
    consumed_to_end,
    intake_process,
    produce,
    read_topic,
    structured,
)

GROUP = "leanon-intake"
HOOK = "https://93.184.215.14/hooks/x"


@pytest.fixture(scope="module")
def intake(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IntakeProcess]:
    prefix = new_prefix("ce")
    with intake_process(infra, prefix, tmp_path_factory.mktemp("ce")) as process:
        yield process


def helper_data() -> dict[str, Any]:
    return {
        "skills": {"driving": 2},
        "location": {"lat": 48.1, "lon": 11.6},
        "contact": {"webhook_url": HOOK},
    }


def request_data() -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    return {
        "skills": {"driving": 1},
        "window": {"start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat()},
    }


def uid() -> str:
    return uuid.uuid4().hex[:12]


async def all_consumed(infra: Infra, intake: IntakeProcess) -> None:
    await wait_for(
        lambda: consumed_to_end(infra, intake.topic("intake"), intake.topic(GROUP)),
        timeout=30,
        what="intake consumed its topic to the end",
    )


async def make_offer(infra: Infra, intake: IntakeProcess) -> tuple[str, OfferRecords, Redis]:
    redis = Redis.from_url(infra.redis_url, protocol=2)
    offers = OfferRecords(redis, intake.prefix)
    offer_id = uid()
    await offers.create(OfferRecord("alpha", offer_id, uid(), uid(), "r1", "offered"))
    return offer_id, offers, redis


# -- the official SDK --------------------------------------------------------------------------

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def core_binary(attrs: dict[str, Any], data: Any) -> Record:
    message = ce_kafka.to_binary_event(SdkEvent(attributes=attrs, data=data))
    return _record(message.key, message.value, message.headers)


def core_structured(attrs: dict[str, Any], data: Any) -> Record:
    message = ce_kafka.to_structured_event(SdkEvent(attributes=attrs, data=data))
    return _record(message.key, message.value, message.headers)


def v1_binary(attrs: dict[str, Any], data: Any) -> Record:
    message = ce_kafka_v1.to_binary(SdkEventV1(attrs, data))
    return _record(message.key, message.value, message.headers)


def v1_structured(attrs: dict[str, Any], data: Any) -> Record:
    message = ce_kafka_v1.to_structured(SdkEventV1(attrs, data))
    return _record(message.key, message.value, message.headers)


def _record(key: Any, value: bytes | None, headers: dict[str, bytes]) -> Record:
    key_bytes = key.encode() if isinstance(key, str) else key
    return key_bytes, value, list(headers.items())


SDK_MODES: dict[str, Callable[[dict[str, Any], Any], Record]] = {
    "sdk binary": core_binary,
    "sdk structured": core_structured,
    "sdk v1 api binary": v1_binary,
    "sdk v1 api structured": v1_structured,
}


@pytest.mark.parametrize("mode", SDK_MODES)
async def test_every_type_from_the_official_sdk_is_applied(
    intake: IntakeProcess, infra: Infra, mode: str
) -> None:
    to_record = SDK_MODES[mode]
    kept, removed, request_key = uid(), uid(), uid()
    offer_id, offers, redis = await make_offer(infra, intake)
    source = f"/partner/{uid()}"

    def event(type_: str, subject: str | None, data: Any = None) -> Record:
        attrs = {
            "type": f"org.leanon.{type_}",
            "source": source,
            "id": uid(),
            "orgid": "alpha",
            "partitionkey": subject or request_key,  # one subject keeps one partition
            "datacontenttype": "application/json",
        }
        if subject:
            attrs["subject"] = subject
        return to_record(attrs, data)

    submitted = event("request.submitted", None, request_data())
    request_id = f"{source}:{dict(submitted[2]).get('ce_id', b'').decode()}"
    records = [
        event("helper.upserted", kept, helper_data()),
        event("helper.upserted", removed, helper_data()),
        event("helper.removed", removed),
        submitted,
        event("offer.accepted", offer_id),
    ]
    await produce(infra, intake.topic("intake"), records)
    await all_consumed(infra, intake)
    try:
        async with intake.client() as c:
            assert (await c.get(f"/v1/helpers/{kept}")).json()["skills"] == {"driving": 2}
            assert (await c.get(f"/v1/helpers/{removed}")).status_code == 404
            if "structured" in mode:  # the request id defaults to source + id
                request_id = _structured_request_id(submitted)
            status = await c.get(f"/v1/requests/{request_id.replace('/', '_')}")
            assert status.status_code == 200, status.text
        offer = await offers.get("alpha", offer_id)
        assert offer is not None and offer.status == "accepted"
        cancel = event("request.cancelled", request_id.replace("/", "_"))
        await produce(infra, intake.topic("intake"), [cancel])
        await all_consumed(infra, intake)
        commands = [
            orjson.loads(r.value) for r in await read_topic(infra, intake.topic("requests"))
        ]
        assert any(
            c["type"] == "org.leanon.request.cancelled"
            and c["subject"] == request_id.replace("/", "_")
            for c in commands
        )
        assert (await read_topic(infra, intake.topic("intake.dlq"))) == []
    finally:
        await redis.aclose()


def _structured_request_id(record: Record) -> str:
    body = orjson.loads(record[1] or b"{}")
    return f"{body['source']}:{body['id']}"


# -- what a shell tool sends ---------------------------------------------------------------------


async def test_hand_written_json_from_kafkas_console_producer_is_applied(
    intake: IntakeProcess, infra: Infra
) -> None:
    helper_id = uid()
    line = (
        '{"specversion": "1.0", "type": "org.leanon.helper.upserted", "source": "/ops/shell",'
        f' "id": "{uid()}", "subject": "{helper_id}", "orgid": "alpha",'
        f' "data": {orjson.dumps(helper_data()).decode()}}}\n'
    )
    sent = await asyncio.to_thread(
        subprocess.run,
        [str(ROOT / "deploy/local/kafka.sh"), "produce", intake.topic("intake")],
        input=line,
        text=True,
        capture_output=True,
        timeout=60,
        env=intake.env,
    )
    assert sent.returncode == 0, sent.stderr
    async with intake.client() as c:
        helper = await wait_for(
            lambda: _ok_json(c.get(f"/v1/helpers/{helper_id}")), what="helper from the shell"
        )
    assert helper["version"] == 1 and helper["skills"] == {"driving": 2}


async def _ok_json(pending: Any) -> dict[str, Any] | None:
    response = await pending
    return response.json() if response.status_code == 200 else None


# -- duplicates ----------------------------------------------------------------------------------


async def test_the_same_source_and_id_is_one_event(intake: IntakeProcess, infra: Infra) -> None:
    helper_id, event_id, request_event = uid(), uid(), uid()
    upsert = {
        "specversion": "1.0",
        "type": "org.leanon.helper.upserted",
        "source": "/dup",
        "id": event_id,
        "subject": helper_id,
        "orgid": "alpha",
        "data": helper_data(),
    }
    submit = {
        "specversion": "1.0",
        "type": "org.leanon.request.submitted",
        "source": "/dup",
        "id": request_event,
        "orgid": "alpha",
        "data": request_data(),
    }
    records = [(helper_id.encode(), *structured(upsert))] * 3 + [(b"r", *structured(submit))] * 3
    # twice over: within one batch, and again in a later one
    await produce(infra, intake.topic("intake"), records[:2] + records[3:5])
    await all_consumed(infra, intake)
    await produce(infra, intake.topic("intake"), records[2:3] + records[5:])
    await all_consumed(infra, intake)
    async with intake.client() as c:
        assert (await c.get(f"/v1/helpers/{helper_id}")).json()["version"] == 1
    helpers = [
        r
        for r in await read_topic(infra, intake.topic("helpers"))
        if r.key == f"alpha/{helper_id}".encode()
    ]
    assert len(helpers) == 1
    commands = [orjson.loads(r.value) for r in await read_topic(infra, intake.topic("requests"))]
    assert [c["subject"] for c in commands].count(f"/dup:{request_event}".replace("/", "_")) == 1


# -- rejects -------------------------------------------------------------------------------------

VALID = {
    "specversion": "1.0",
    "type": "org.leanon.helper.upserted",
    "source": "/fuzz",
    "id": "x",
    "subject": "h1",
    "orgid": "alpha",
    "data": helper_data(),
}
NAMED_REJECTS: dict[str, tuple[dict[str, Any], str]] = {
    "no orgid": ({k: v for k, v in VALID.items() if k != "orgid"}, "missing-orgid"),
    "unknown org": (VALID | {"orgid": "mallory"}, "unknown-org"),
    "unknown type": (VALID | {"type": "org.leanon.helper.promoted"}, "unknown-type"),
    "no source": ({k: v for k, v in VALID.items() if k != "source"}, "missing-attribute"),
    "specversion 0.3": (VALID | {"specversion": "0.3"}, "bad-specversion"),
    "subject with slash": (VALID | {"subject": "../h1"}, "bad-subject"),
    "level 9": (VALID | {"data": helper_data() | {"skills": {"driving": 9}}}, "invalid-data"),
    "private webhook": (
        VALID | {"data": helper_data() | {"contact": {"webhook_url": "http://10.1.1.1/"}}},
        "invalid",
    ),
    "long id": (VALID | {"id": "i" * 5000}, "bad-attribute"),
}


async def test_each_kind_of_bad_event_is_dead_lettered_with_its_reason(
    intake: IntakeProcess, infra: Infra
) -> None:
    marker = uid()
    sent = [
        (
            name.encode(),
            *structured(body | {"id": f"{marker}-{i}"} if "long id" not in name else body),
        )
        for i, (name, (body, _)) in enumerate(NAMED_REJECTS.items())
    ]
    await produce(infra, intake.topic("intake"), sent)
    await all_consumed(infra, intake)
    dead = {
        r.key.decode(): dict(r.headers) for r in await read_topic(infra, intake.topic("intake.dlq"))
    }
    for name, (_, code) in NAMED_REJECTS.items():
        assert dead[name]["x-leanon-error"].decode() == code, name
        assert dead[name]["x-leanon-error-detail"], name


def bad_records() -> st.SearchStrategy[Record]:
    """Records no valid event could be: each breaks a rule on purpose, with random content."""
    text = st.text(max_size=60)  # odd unicode, control characters, surrogates excluded
    header_bytes = st.binary(max_size=40)
    mutated = st.one_of(
        st.binary(max_size=300).map(lambda b: (None, b"\xff" + b, [])),  # never JSON
        st.lists(st.integers(), max_size=5).map(lambda v: (None, orjson.dumps(v), [])),
        st.sampled_from(["id", "source", "type", "specversion"]).map(
            lambda k: (None, orjson.dumps({a: b for a, b in VALID.items() if a != k}), [])
        ),
        st.tuples(
            st.sampled_from(["id", "source", "type", "subject"]),
            st.integers() | st.lists(text, max_size=2) | st.none() | st.booleans(),
        ).map(
            lambda kv: (
                None,
                orjson.dumps(VALID | {kv[0]: kv[1]} | ({"id": None} if kv[0] == "id" else {})),
                [],
            )
        ),
        text.map(lambda t: (None, orjson.dumps(VALID | {"type": f"org.leanon.{t}!"}), [])),
        text.map(lambda t: (None, orjson.dumps(VALID | {"subject": f"{t}/x"}), [])),
        st.integers(1025, 20_000).map(
            lambda n: (None, orjson.dumps(VALID | {"source": "s" * n}), [])
        ),
        st.fixed_dictionaries({"skills": st.dictionaries(text, st.integers(), max_size=3)}).map(
            lambda d: (
                None,
                orjson.dumps(
                    VALID | {"data": helper_data() | d | {"skills": d["skills"] | {"BAD NAME": 9}}}
                ),
                [],
            )
        ),
        header_bytes.map(  # binary mode, a non-UTF-8 attribute header
            lambda b: (
                None,
                orjson.dumps(helper_data()),
                [
                    ("ce_specversion", b"1.0"),
                    ("ce_type", b"\xff" + b),
                    ("ce_source", b"/s"),
                    ("ce_id", b"1"),
                    ("ce_orgid", b"alpha"),
                ],
            )
        ),
        text.map(  # binary mode without a type
            lambda t: (
                None,
                t.encode("utf-8", "surrogatepass"),
                [
                    ("ce_specversion", b"1.0"),
                    ("ce_source", b"/s"),
                    ("ce_id", b"2"),
                    ("ce_orgid", b"alpha"),
                ],
            )
        ),
    )
    return mutated


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(batch=st.lists(bad_records(), min_size=5, max_size=40))
def test_malformed_events_go_to_the_dlq_and_the_partition_moves_on(
    intake: IntakeProcess, infra: Infra, batch: list[Record]
) -> None:
    asyncio.run(_malformed_then_valid(intake, infra, batch))


async def _malformed_then_valid(intake: IntakeProcess, infra: Infra, batch: list[Record]) -> None:
    tag = uid().encode()
    tagged = [(tag + b"-%d" % i, value, headers) for i, (_, value, headers) in enumerate(batch)]
    helper_id = uid()
    valid = VALID | {"id": uid(), "subject": helper_id}
    before = len(await read_topic(infra, intake.topic("intake.dlq")))
    # one partition for all, so the valid event queues behind every bad one
    await produce(
        infra,
        intake.topic("intake"),
        [(b"same", v, h) for _, v, h in tagged] + [(b"same", *structured(valid))],
    )
    async with intake.client() as c:
        await wait_for(lambda: _ok_json(c.get(f"/v1/helpers/{helper_id}")), what="the valid event")
    await all_consumed(infra, intake)
    dead = (await read_topic(infra, intake.topic("intake.dlq")))[before:]
    assert len(dead) == len(batch)
    assert sorted(r.value or b"" for r in dead) == sorted(v or b"" for _, v, _ in tagged)
    for record in dead:
        headers = dict(record.headers)
        assert headers["x-leanon-error"] and headers["x-leanon-error-detail"]
