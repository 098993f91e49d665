"""GET /v1/requests/{id} is built from {prefix}events, and rebuilt by replaying it when Redis
has lost it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord
from redis.asyncio import Redis

from leanon_intake.handlers import StatusProjection
from leanon_intake.readmodel import RequestStatuses
from leanon_shared import events as ev
from leanon_shared.cloudevents import CloudEvent, encode
from tests.conftest import Infra, wait_for
from tests.integration.intake_rig import IntakeProcess, intake_process, produce


def lifecycle(request_id: str) -> list[CloudEvent]:
    """What matching publishes for a request that one helper accepts."""
    offer = {
        "request_id": request_id,
        "offer_id": f"{request_id}-o1",
        "helper_id": "h1",
        "score": 0.8,
        "breakdown": {
            "skill": 1.0,
            "availability": 1.0,
            "distance": 0.5,
            "language": 1.0,
            "fairness": 0.5,
        },
    }
    ext = {ev.ORG_EXTENSION: "alpha", "region": "r1"}
    return [
        CloudEvent(
            ev.REQUEST_ACCEPTED,
            ev.SOURCE_MATCHING,
            subject=request_id,
            data={"request_id": request_id, "helpers_needed": 1},
            extensions=ext,
        ),
        CloudEvent(
            ev.OFFER_CREATED, ev.SOURCE_MATCHING, subject=request_id, data=offer, extensions=ext
        ),
        CloudEvent(
            ev.OFFER_ACCEPTED_EVT,
            ev.SOURCE_MATCHING,
            subject=request_id,
            data={"request_id": request_id, "offer_id": offer["offer_id"]},
            extensions=ext,
        ),
        CloudEvent(
            ev.REQUEST_MATCHED,
            ev.SOURCE_MATCHING,
            subject=request_id,
            data={"request_id": request_id},
            extensions=ext,
        ),
    ]


async def matched(intake: IntakeProcess, request_id: str) -> dict[str, Any] | None:
    async with intake.client() as c:
        response = await c.get(f"/v1/requests/{request_id}")
    body: dict[str, Any] = response.json()
    return body if response.status_code == 200 and body["status"] == "matched" else None


async def test_status_is_rebuilt_from_the_events_topic_after_redis_lost_it(
    infra: Infra, prefix: str, tmp_path: Path
) -> None:
    ids = [uuid.uuid4().hex[:10] for _ in range(3)]
    records = []
    for request_id in ids:
        for event in lifecycle(request_id):
            value, headers = encode(event)
            records.append((request_id.encode(), value, headers))
    with intake_process(infra, prefix, tmp_path) as intake:
        await produce(infra, f"{prefix}events", records)
        before = {
            i: await wait_for(lambda i=i: matched(intake, i), what=f"{i} matched") for i in ids
        }
    assert before[ids[0]]["assignments"][0]["status"] == "accepted"
    assert before[ids[0]]["assignments"][0]["breakdown"]["distance"] == 0.5

    redis = Redis.from_url(infra.redis_url, protocol=2)
    lost = [f"{prefix}status:alpha:{i}" for i in ids] + [f"{prefix}status:replayed"]
    assert await redis.delete(*lost) == len(ids) + 1  # the statuses and the replay marker
    await redis.aclose()

    with intake_process(infra, prefix, tmp_path) as intake:  # starts on an empty read model
        async with intake.client() as c:
            after = {i: (await c.get(f"/v1/requests/{i}")).json() for i in ids}
    assert after == before


async def test_a_reused_id_is_told_from_a_retry_after_redis_lost_the_status(
    infra: Infra, prefix: str, tmp_path: Path
) -> None:
    """What tells a retry from another request reusing its id (the submission's fingerprint)
    comes back from {prefix}requests, where the command carries it; {prefix}events never
    does. No matching runs here, so no event names the request at all: its status comes back
    as pending, from the command alone."""
    request_id = uuid.uuid4().hex[:12]
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    body = {
        "id": request_id,
        "skills": {"first_aid": 2},
        "location": {"lat": 52.51, "lon": 13.39},
        "window": {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
        "description": "carry groceries",
    }
    with intake_process(infra, prefix, tmp_path) as intake:
        async with intake.client() as c:
            assert (await c.post("/v1/requests", json=body)).status_code == 202

    redis = Redis.from_url(infra.redis_url, protocol=2)
    lost = [f"{prefix}status:alpha:{request_id}", f"{prefix}status:replayed"]
    assert await redis.delete(*lost) == 2  # the status and the replay marker
    await redis.delete(f"{prefix}status:fingerprints-replayed")
    await redis.aclose()

    with intake_process(infra, prefix, tmp_path) as intake:
        async with intake.client() as c:
            other = await c.post("/v1/requests", json=body | {"description": "something else"})
            retry = await c.post("/v1/requests", json=body)
            status = await c.get(f"/v1/requests/{request_id}")
    assert other.status_code == 409 and "different request" in other.json()["detail"]
    assert retry.status_code == 202 and retry.json()["id"] == request_id
    assert status.json()["status"] == "pending" and "fingerprint" not in status.json()


async def test_replayed_submissions_add_fingerprints_and_keep_what_events_built(
    redis: Redis, prefix: str
) -> None:
    statuses = RequestStatuses(redis, prefix)

    def submitted(request_id: str, **data: Any) -> CloudEvent:
        body = {"request_id": request_id, "region": "r1", "request": {"helpers_needed": 2}}
        return CloudEvent(
            ev.REQUEST_SUBMITTED,
            ev.SOURCE_INTAKE,
            subject=request_id,
            data=body | data,
            extensions={ev.ORG_EXTENSION: "alpha"},
        )

    await statuses.apply(lifecycle("seen"))  # matched, rebuilt from events: no fingerprint
    commands = [
        submitted("seen", fingerprint="f-seen"),
        submitted("new", fingerprint="f-new"),
        submitted("new", fingerprint="f-later"),  # a retry's command: the first one counts
        submitted("old"),  # published before commands carried fingerprints
    ]
    assert await statuses.remember_submissions(commands) == 3
    seen, new, old = [await statuses.get("alpha", i) for i in ("seen", "new", "old")]
    assert seen is not None and seen["status"] == "matched" and seen["fingerprint"] == "f-seen"
    assert new is not None and new["status"] == "pending" and new["fingerprint"] == "f-new"
    assert new["helpers_needed"] == 2 and new["region"] == "r1"
    assert old is not None and old["status"] == "pending" and "fingerprint" not in old
    assert await statuses.remember_submissions(commands) == 0  # replayed again: nothing moves


async def test_the_projection_skips_records_whose_type_header_no_status_folds(
    redis: Redis, prefix: str
) -> None:
    """notification's reports carry a `ce_type` header: one naming a type no status folds in
    is skipped unparsed (even a body that would move the status), any other is read."""

    def as_record(event: CloudEvent, type_header: str | None = None) -> ConsumerRecord:
        value, headers = encode(event)
        if type_header:
            headers.append(("ce_type", type_header.encode()))
        return ConsumerRecord("t", 0, 0, 0, 0, None, value, None, 0, 0, headers)

    statuses = RequestStatuses(redis, prefix)
    matched_events = lifecycle("p1")
    dropped = CloudEvent(
        ev.OFFER_DROPPED_EVT,
        ev.SOURCE_MATCHING,
        subject="p1",
        data={"request_id": "p1", "offer_id": "p1-o1"},
        extensions={ev.ORG_EXTENSION: "alpha", "region": "r1"},
    )
    records = [as_record(e, e.type if i == 1 else None) for i, e in enumerate(matched_events)]
    records.append(as_record(dropped, "org.leanon.notification.delivered"))
    await StatusProjection(statuses)(records)
    status = await statuses.get("alpha", "p1")
    assert status is not None and status["status"] == "matched"  # the "report" was skipped
    assert status["assignments"][0]["score"] == 0.8  # offer.created read despite its header
    await StatusProjection(statuses)([as_record(dropped)])  # without the header it is read
    status = await statuses.get("alpha", "p1")
    assert status is not None and status["status"] == "offered"
