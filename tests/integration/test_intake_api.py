"""The intake HTTP API against a real intake process, Kafka and Redis: every status code and
limit of the contract, idempotency, and a cross-org (BOLA) matrix over every route."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from leanon_shared.offers import OfferRecord, OfferRecords
from tests.conftest import Infra, new_prefix
from tests.integration.intake_rig import IntakeProcess, intake_process, read_topic, request_body

PUBLIC_HOOK = "https://93.184.215.14/hooks/x"


@pytest.fixture(scope="module")
def intake(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IntakeProcess]:
    prefix = new_prefix("api")
    # beta gets a tiny limit so the 429 test is quick; alpha keeps the default
    with intake_process(
        infra, prefix, tmp_path_factory.mktemp("intake"), LEANON_RATE_LIMITS="beta:5:5"
    ) as process:
        yield process


def helper_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "skills": {"first_aid": 3},
        "languages": ["en"],
        "location": {"lat": 52.52, "lon": 13.405},
        "radius_km": 10,
        "availability": {
            "timezone": "Europe/Berlin",
            "weekly": [{"day": "mon", "start": "09:00", "end": "17:00"}],
        },
        "capacity": 2,
        "contact": {"webhook_url": PUBLIC_HOOK, "email": "h1@example.org"},
    }
    return body | changes


def new_id() -> str:
    return uuid.uuid4().hex[:12]


# -- 401 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": "Basic YTpi"}],
    ids=["no key", "unknown key", "not bearer"],
)
async def test_calls_without_a_known_key_are_401(
    intake: IntakeProcess, headers: dict[str, str]
) -> None:
    async with intake.client(None, headers=headers) as c:
        response = await c.get(f"/v1/helpers/{new_id()}")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


# -- helpers: 201, 200, GET, DELETE, 404 -----------------------------------------------------


async def test_helper_put_get_update_delete(intake: IntakeProcess, infra: Infra) -> None:
    helper_id = new_id()
    async with intake.client() as c:
        created = await c.put(f"/v1/helpers/{helper_id}", json=helper_body())
        updated = await c.put(f"/v1/helpers/{helper_id}", json=helper_body(capacity=3))
        stored = await c.get(f"/v1/helpers/{helper_id}")
        deleted = await c.delete(f"/v1/helpers/{helper_id}")
        after = await c.get(f"/v1/helpers/{helper_id}")
        again = await c.delete(f"/v1/helpers/{helper_id}")
    assert (created.status_code, created.json()) == (201, {"id": helper_id, "version": 1})
    assert (updated.status_code, updated.json()) == (200, {"id": helper_id, "version": 2})
    assert stored.json()["capacity"] == 3 and stored.json()["version"] == 2
    assert deleted.status_code == 204
    assert after.status_code == 404 and after.json()["error"] == "not-found"
    assert again.status_code == 404
    # the compacted topic ends with a tombstone: the contact details are erased there too
    records = [
        r
        for r in await read_topic(infra, intake.topic("helpers"))
        if r.key == f"alpha/{helper_id}".encode()
    ]
    assert [r.value is None for r in records] == [False, False, True]


# -- requests: 202, idempotency, 409 ---------------------------------------------------------


async def test_request_id_and_idempotency_key_make_one_request(
    intake: IntakeProcess, infra: Infra
) -> None:
    by_id, by_key = new_id(), new_id()
    body = request_body()  # the same body each time: a retry sends what it sent before
    async with intake.client() as c:
        first = [await c.post("/v1/requests", json=body | {"id": by_id}) for _ in range(3)]
        keyed = [
            await c.post("/v1/requests", json=body, headers={"Idempotency-Key": by_key})
            for _ in range(3)
        ]
        status = await c.get(f"/v1/requests/{by_id}")
    assert {r.status_code for r in first + keyed} == {202}
    assert {r.json()["id"] for r in first} == {by_id}
    assert {r.json()["id"] for r in keyed} == {by_key}
    assert first[0].json()["status_url"].endswith(f"/v1/requests/{by_id}")
    assert status.json()["status"] == "pending" and status.json()["assignments"] == []
    assert "fingerprint" not in status.json() and "region" not in status.json()
    # each POST answered after Kafka had its command: reading now sees all there will be
    commands = [orjson.loads(r.value) for r in await read_topic(infra, intake.topic("requests"))]
    ids = [c["data"]["request_id"] for c in commands if c["type"] == "org.leanon.request.submitted"]
    assert ids.count(by_id) == 1 and ids.count(by_key) == 1


async def test_an_id_reused_for_another_request_is_409(intake: IntakeProcess) -> None:
    request_id = new_id()
    async with intake.client() as c:
        first = await c.post("/v1/requests", json=request_body(id=request_id))
        other = await c.post("/v1/requests", json=request_body(id=request_id, description="other"))
    assert first.status_code == 202
    assert other.status_code == 409 and "different request" in other.json()["detail"]


async def test_cancel_answers_200_and_unknown_requests_404(intake: IntakeProcess) -> None:
    request_id = new_id()
    async with intake.client() as c:
        await c.post("/v1/requests", json=request_body(id=request_id))
        cancelled = await c.post(f"/v1/requests/{request_id}/cancel")
        unknown = await c.post(f"/v1/requests/{new_id()}/cancel")
        missing = await c.get(f"/v1/requests/{new_id()}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert unknown.status_code == 404 and missing.status_code == 404


# -- offers: 200, 409, 404 -------------------------------------------------------------------


async def make_offer(intake: IntakeProcess, infra: Infra, org: str = "alpha") -> str:
    """An open offer as matching records it (the shared offer store)."""
    offer_id = new_id()
    redis = Redis.from_url(infra.redis_url, protocol=2)
    try:
        await OfferRecords(redis, intake.prefix).create(
            OfferRecord(
                offer_id=offer_id,
                org=org,
                request_id=new_id(),
                helper_id=new_id(),
                region="r1",
                status="offered",
            )
        )
    finally:
        await redis.aclose()
    return offer_id


async def test_an_offer_is_answered_once(intake: IntakeProcess, infra: Infra) -> None:
    offer_id = await make_offer(intake, infra)
    async with intake.client() as c:
        accepted = await c.post(f"/v1/offers/{offer_id}/accept")
        repeated = await c.post(f"/v1/offers/{offer_id}/accept")
        declined = await c.post(f"/v1/offers/{offer_id}/decline")
        unknown = await c.post(f"/v1/offers/{new_id()}/accept")
    assert accepted.json() == {"offer_id": offer_id, "status": "accepted"}
    assert repeated.status_code == 200  # the same answer again is the same answer
    assert declined.status_code == 409 and declined.json()["error"] == "conflict"
    assert unknown.status_code == 404


# -- 413 -------------------------------------------------------------------------------------


async def test_bodies_over_64_kib_are_413_before_parsing(intake: IntakeProcess) -> None:
    big = request_body(description="x" * 70_000)
    raw = orjson.dumps(big)

    async def chunks() -> Any:  # no Content-Length: counted as it streams
        for i in range(0, len(raw), 8192):
            yield raw[i : i + 8192]

    async with intake.client() as c:
        declared = await c.post(
            "/v1/requests", content=raw, headers={"content-type": "application/json"}
        )
        streamed = await c.post(
            "/v1/requests", content=chunks(), headers={"content-type": "application/json"}
        )
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"] == "too-large"


# -- 422 -------------------------------------------------------------------------------------

LONG_AGO = datetime.now(UTC) - timedelta(days=3)
INVALID_HELPERS = {
    "no skills": helper_body(skills={}),
    "51 skills": helper_body(skills={f"s{i}": 1 for i in range(51)}),
    "level 6": helper_body(skills={"first_aid": 6}),
    "skill name": helper_body(skills={"First Aid": 2}),
    "language": helper_body(languages=["english"]),
    "timezone": helper_body(availability={"timezone": "Mars/Olympus"}),
    "slot time": helper_body(
        availability={"weekly": [{"day": "mon", "start": "25:00", "end": "26:00"}]}
    ),
    "radius 0": helper_body(radius_km=0),
    "radius 501": helper_body(radius_km=501),
    "capacity 21": helper_body(capacity=21),
    "latitude": helper_body(location={"lat": 91, "lon": 0}),
    "no contact": helper_body(contact={}),
    "ftp webhook": helper_body(contact={"webhook_url": "ftp://example.org/x"}),
    "loopback webhook": helper_body(contact={"webhook_url": "http://127.0.0.1:8080/x"}),
    "metadata webhook": helper_body(contact={"webhook_url": "http://169.254.169.254/latest"}),
    "private webhook": helper_body(contact={"webhook_url": "http://10.0.0.8/x"}),
    "unknown field": helper_body(admin=True),
}
INVALID_REQUESTS = {
    "no skills": request_body(skills={}),
    "21 skills": request_body(skills={f"s{i}": 1 for i in range(21)}),
    "end before start": request_body(
        window={"start": "2030-01-02T10:00:00Z", "end": "2030-01-02T09:00:00Z"}
    ),
    "window of 40 days": request_body(
        window={"start": "2030-01-01T00:00:00Z", "end": "2030-02-10T00:00:00Z"}
    ),
    "long past": request_body(
        window={"start": LONG_AGO.isoformat(), "end": (LONG_AGO + timedelta(hours=1)).isoformat()}
    ),
    "naive time": request_body(
        window={"start": "2030-01-02T09:00:00", "end": "2030-01-02T10:00:00"}
    ),
    "expires after end": request_body(expires_at="2099-01-01T00:00:00Z"),
    "urgency": request_body(urgency="panic"),
    "helpers_needed 0": request_body(helpers_needed=0),
    "helpers_needed 21": request_body(helpers_needed=21),
    "description 2001": request_body(description="d" * 2001),
    "id": request_body(id="has spaces/and slashes"),
    "private webhook": request_body(contact={"webhook_url": "http://[::1]/x"}),
    "not json": None,
}


@pytest.mark.parametrize("case", INVALID_HELPERS, ids=list(INVALID_HELPERS))
async def test_invalid_helpers_are_422_with_the_field(intake: IntakeProcess, case: str) -> None:
    async with intake.client() as c:
        response = await c.put(f"/v1/helpers/{new_id()}", json=INVALID_HELPERS[case])
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid"
    assert body["detail"] and all(f["loc"] and f["msg"] for f in body["detail"])


@pytest.mark.parametrize("case", INVALID_REQUESTS, ids=list(INVALID_REQUESTS))
async def test_invalid_requests_are_422_with_the_field(intake: IntakeProcess, case: str) -> None:
    async with intake.client() as c:
        if INVALID_REQUESTS[case] is None:
            response = await c.post(
                "/v1/requests", content=b"{not json", headers={"content-type": "application/json"}
            )
        else:
            response = await c.post("/v1/requests", json=INVALID_REQUESTS[case])
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid" and response.json()["detail"]


async def test_a_bad_id_in_the_path_is_422(intake: IntakeProcess) -> None:
    async with intake.client() as c:
        response = await c.get("/v1/requests/" + "x" * 129)
    assert response.status_code == 422


# -- 429 -------------------------------------------------------------------------------------


async def test_an_org_over_its_rate_limit_gets_429_with_retry_after(intake: IntakeProcess) -> None:
    async with intake.client("beta") as beta, intake.client("alpha") as alpha:
        answers = [(await beta.get(f"/v1/helpers/{new_id()}")).status_code for _ in range(12)]
        limited = await beta.get(f"/v1/helpers/{new_id()}")
        other_org = await alpha.get(f"/v1/helpers/{new_id()}")
    assert answers[:5] == [404] * 5  # the burst of 5 passes
    assert 429 in answers[5:]
    assert limited.status_code == 429 and limited.json()["error"] == "rate-limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert other_org.status_code == 404  # alpha's budget is its own


# -- BOLA: nothing of one org is visible to or changeable by another -------------------------


async def test_no_route_lets_one_org_touch_anothers_data(
    intake: IntakeProcess, infra: Infra
) -> None:
    helper_id, request_id = new_id(), new_id()
    async with intake.client("alpha") as alpha:
        assert (await alpha.put(f"/v1/helpers/{helper_id}", json=helper_body())).status_code == 201
        assert (
            await alpha.post("/v1/requests", json=request_body(id=request_id))
        ).status_code == 202
    offer_id = await make_offer(intake, infra, org="alpha")
    attempts = [
        ("GET", f"/v1/helpers/{helper_id}", None),
        ("DELETE", f"/v1/helpers/{helper_id}", None),
        ("GET", f"/v1/requests/{request_id}", None),
        ("POST", f"/v1/requests/{request_id}/cancel", None),
        ("POST", f"/v1/offers/{offer_id}/accept", None),
        ("POST", f"/v1/offers/{offer_id}/decline", None),
        ("POST", f"/v1/offers/{offer_id}/drop", None),
    ]
    # an insider from beta, with a valid key of its own, well inside its rate limit
    redis = Redis.from_url(infra.redis_url, protocol=2)
    await redis.delete(f"{intake.prefix}ratelimit:beta")
    async with intake.client("beta") as beta:
        for method, path, body in attempts:
            response = await beta.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.status_code)
            assert response.json()["error"] == "not-found"  # as for an id nobody has
            await redis.delete(f"{intake.prefix}ratelimit:beta")
        # beta "creating" alpha's helper id makes beta's own helper; alpha's is untouched
        assert (
            await beta.put(f"/v1/helpers/{helper_id}", json=helper_body(capacity=9))
        ).status_code == 201
    await redis.aclose()
    async with intake.client("alpha") as alpha:
        helper = (await alpha.get(f"/v1/helpers/{helper_id}")).json()
        status = (await alpha.get(f"/v1/requests/{request_id}")).json()
        answered = await alpha.post(f"/v1/offers/{offer_id}/accept")
    assert helper["capacity"] == 2 and helper["version"] == 1
    assert status["status"] == "pending"
    assert answered.status_code == 200  # beta's attempts did not move the offer


# -- AsyncAPI --------------------------------------------------------------------------------


async def test_asyncapi_describes_what_intake_accepts(intake: IntakeProcess) -> None:
    from jsonschema import Draft202012Validator

    async with intake.client(None) as c:
        doc = (await c.get("/asyncapi")).json()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["intake"]["address"] == intake.topic("intake")
    assert doc["channels"]["intakeDlq"]["address"] == intake.topic("intake.dlq")
    payload = {**doc, "$ref": "#/components/messages/helper_upserted/payload"}
    validator = Draft202012Validator(payload)
    event = {
        "specversion": "1.0",
        "type": "org.leanon.helper.upserted",
        "source": "/crm",
        "id": "1",
        "orgid": "alpha",
        "subject": "h1",
        "data": helper_body(),
    }
    assert list(validator.iter_errors(event)) == []
    assert list(validator.iter_errors(event | {"data": helper_body(skills={"x": 9})}))
    assert list(validator.iter_errors({k: v for k, v in event.items() if k != "orgid"}))
