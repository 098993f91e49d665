"""The whole path through three processes, real Kafka, real Redis and a real receiver."""

from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer

from tests.conftest import wait_for
from tests.e2e.conftest import Receiver, Stack

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def helper_body(receiver: Receiver, name: str, **over: Any) -> dict[str, Any]:
    body = {
        "skills": {"first_aid": 3, "driving": 2},
        "languages": ["en", "es"],
        "location": {"lat": 52.52, "lon": 13.405},
        "radius_km": 10,
        "availability": {
            "timezone": "Europe/Berlin",
            "weekly": [{"day": d, "start": "06:00", "end": "23:00"} for d in DAYS],
        },
        "capacity": 1,
        "contact": {
            "webhook_url": f"{receiver.url}/helpers/{name}",
            "email": f"{name}@example.org",
        },
    }
    body.update(over)
    return body


def request_body(receiver: Receiver, rid: str, **over: Any) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=2)).replace(
        hour=9, minute=0, second=0, microsecond=0
    )
    body = {
        "id": rid,
        "skills": {"first_aid": 2},
        "languages": ["es"],
        "location": {"lat": 52.51, "lon": 13.39},
        "window": {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
        "description": "Help carrying groceries upstairs",
        "contact": {
            "webhook_url": f"{receiver.url}/requesters/{rid}",
            "email": f"{rid}@example.org",
        },
    }
    body.update(over)
    return body


async def test_request_is_offered_accepted_and_matched(stack: Stack, receiver: Receiver) -> None:
    async with stack.client() as api:
        put = await api.put("/v1/helpers/h-ana", json=helper_body(receiver, "h-ana"))
        assert put.status_code == 201, put.text
        assert (
            await api.put("/v1/helpers/h-ana", json=helper_body(receiver, "h-ana"))
        ).status_code == 200

        await stack.indexed("alpha", "h-ana")
        posted = await api.post("/v1/requests", json=request_body(receiver, "r-1"))
        assert posted.status_code == 202, posted.text
        assert posted.json()["status"] == "pending"

        offer = (
            await wait_for(
                lambda: receiver.events("/helpers/h-ana", "org.leanon.offer.created"),
                what="the helper's offer webhook",
            )
        )[0]
        data = offer["data"]
        assert data["request_id"] == "r-1" and data["helper_id"] == "h-ana"
        assert 0 < data["score"] <= 1 and set(data["breakdown"]) == {
            "skill",
            "availability",
            "distance",
            "language",
            "fairness",
        }
        assert offer["orgid"] == "alpha" and receiver.bad_signatures == 0

        accepted = await api.post(f"/v1/offers/{data['offer_id']}/accept")
        assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
        again = await api.post(f"/v1/offers/{data['offer_id']}/decline")
        assert again.status_code == 409

        matched = await wait_for(
            lambda: receiver.events("/requesters/r-1", "org.leanon.request.matched"),
            what="the requester's matched webhook",
        )
        assert matched[0]["data"]["assignments"][0]["helper_id"] == "h-ana"

        async def status() -> dict[str, Any] | None:
            body = (await api.get("/v1/requests/r-1")).json()
            return body if body["status"] == "matched" else None

        final = await wait_for(status, what="GET to say matched")
        assert final["assignments"][0]["status"] == "accepted"
        assert final["assignments"][0]["breakdown"]["skill"] > 0


async def test_no_helper_means_unmatched_with_a_reason(stack: Stack, receiver: Receiver) -> None:
    async with stack.client() as api:
        body = request_body(receiver, "r-diving", skills={"diving": 4}, languages=[])
        assert (await api.post("/v1/requests", json=body)).status_code == 202
        unmatched = await wait_for(
            lambda: receiver.events("/requesters/r-diving", "org.leanon.request.unmatched"),
            what="the unmatched webhook",
        )
        assert "diving" in unmatched[0]["data"]["reason"]

        async def status() -> dict[str, Any] | None:
            body = (await api.get("/v1/requests/r-diving")).json()
            return body if body["status"] == "unmatched" else None

        final = await wait_for(status, what="GET to say unmatched")
        assert "diving" in final["reason"] and final["assignments"] == []


async def test_orgs_are_isolated_and_keys_required(stack: Stack, receiver: Receiver) -> None:
    async with stack.client("alpha") as alpha, stack.client("beta") as beta:
        assert (
            await alpha.put("/v1/helpers/h-iso", json=helper_body(receiver, "h-iso"))
        ).status_code == 201
        assert (await beta.get("/v1/helpers/h-iso")).status_code == 404
        assert (await beta.delete("/v1/helpers/h-iso")).status_code == 404
        assert (await alpha.get("/v1/helpers/h-iso")).status_code == 200
        anonymous = await alpha.get("/v1/helpers/h-iso", headers={"Authorization": ""})
        assert anonymous.status_code == 401
        wrong = await alpha.get("/v1/helpers/h-iso", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        bad = await alpha.put("/v1/helpers/h-bad", json={"skills": {}})
        assert bad.status_code == 422


async def test_contact_details_never_reach_the_events_topic(
    stack: Stack, receiver: Receiver
) -> None:
    async with stack.client() as api:
        await api.put("/v1/helpers/h-priv", json=helper_body(receiver, "h-priv"))
        await stack.indexed("alpha", "h-priv")
        await api.post("/v1/requests", json=request_body(receiver, "r-priv"))
        await wait_for(
            lambda: (
                receiver.events("/helpers/h-priv", "org.leanon.offer.created")
                or receiver.events("/helpers/h-ana", "org.leanon.offer.created")
            ),
            what="an offer",
        )
    topic = f"{stack.env['LEANON_TOPIC_PREFIX']}events"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.env["LEANON_KAFKA_BOOTSTRAP"],
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000, max_records=10_000)
    finally:
        await consumer.stop()
    values = [r.value for records in batches.values() for r in records]
    assert values, "the events topic should hold lifecycle events"
    for value in values:
        assert b"example.org" not in value and receiver.url.encode() not in value
