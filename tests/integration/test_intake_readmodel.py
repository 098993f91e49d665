"""GET /v1/requests/{id} is built from {prefix}events, and rebuilt by replaying it when Redis
has lost it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

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
