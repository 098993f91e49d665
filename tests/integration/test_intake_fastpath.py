"""POST /v1/requests answers the same through its fast path as through the FastAPI route.

One intake app runs in this process on real Kafka and Redis. Each case goes to the whole app
(fast path first) and straight to what lies under the fast path (the FastAPI app, with the
route and its error handlers), and the two answers must agree. A counter under the fast path
shows which requests it answered itself: a fast path that quietly handed everything on would
fail here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from leanon_intake.app import create_app
from leanon_intake.service import Intake
from leanon_intake.settings import IntakeSettings
from tests.conftest import Infra, env_for, new_prefix
from tests.integration.intake_rig import request_body

KEYS = {"alpha": "alpha-key-0123456789abcdef", "beta": "beta-key-0123456789abcdef"}
BASE = "http://intake.test"


@dataclass
class Rig:
    fast: httpx.AsyncClient  # the whole app
    route: httpx.AsyncClient  # under the fast path: FastAPI's route
    handed_on: list[str]  # paths of requests that reached the route through the whole app
    intake: Intake


class _Counting:
    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["path"])
        await self.app(scope, receive, send)


def _transport(app: Any) -> httpx.ASGITransport:
    # a 500 comes back as the server would send it, not as the exception behind it
    return httpx.ASGITransport(app=app, raise_app_exceptions=False)


@pytest.fixture(scope="module")
async def rig(infra: Infra) -> AsyncIterator[Rig]:
    env = env_for(
        infra,
        new_prefix("fast"),
        LEANON_API_KEYS=",".join(f"{org}:{key}" for org, key in KEYS.items()),
        LEANON_WEBHOOK_ALLOW_HOSTS="",
        LEANON_RATE_LIMITS="beta:1:1",
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            if name.startswith("LEANON_"):
                patch.setenv(name, value)
        app = create_app(IntakeSettings())
    fast = app.submissions
    assert fast is not None
    under = fast.app
    handed_on: list[str] = []
    fast.app = _Counting(under, handed_on)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=_transport(app), base_url=BASE) as whole,
        httpx.AsyncClient(transport=_transport(under), base_url=BASE) as route,
    ):
        yield Rig(whole, route, handed_on, fast.intake)


def body(**changes: Any) -> dict[str, Any]:
    return request_body(contact={"webhook_url": "https://93.184.215.14/hooks/r"}) | changes


def auth(org: str = "alpha", **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[org]}", "Content-Type": "application/json"} | extra


def new_id() -> str:
    return uuid.uuid4().hex[:12]


async def both(
    rig: Rig, content: bytes, headers: dict[str, str]
) -> tuple[httpx.Response, httpx.Response, bool]:
    """The answer of the whole app, that of the route alone, and whether the whole app
    handed the request on to the route."""
    before = len(rig.handed_on)
    fast = await rig.fast.post("/v1/requests", content=content, headers=headers)
    handed_on = len(rig.handed_on) > before
    route = await rig.route.post("/v1/requests", content=content, headers=headers)
    return fast, route, handed_on


async def test_a_new_request_is_answered_by_the_fast_path_as_by_the_route(rig: Rig) -> None:
    fast, route, handed_on = await both(rig, orjson.dumps(body()), auth())
    assert not handed_on
    assert fast.status_code == route.status_code == 202
    assert fast.headers["content-type"] == route.headers["content-type"] == "application/json"
    one, other = fast.json(), route.json()
    assert list(one) == list(other) == ["id", "status", "status_url"]
    assert one["id"] != other["id"]  # each made its own request
    for answer in (one, other):
        assert answer["status"] == "pending"
        assert answer["status_url"] == f"{BASE}/v1/requests/{answer['id']}"
    status = await rig.fast.get(f"/v1/requests/{one['id']}", headers=auth())
    assert status.status_code == 200 and status.json()["status"] == "pending"


@pytest.mark.parametrize("how", ["body id", "idempotency key"])
async def test_an_id_given_makes_one_request_however_often_it_is_sent(rig: Rig, how: str) -> None:
    request_id = new_id()
    if how == "body id":
        content, headers = orjson.dumps(body(id=request_id)), auth()
    else:
        content, headers = orjson.dumps(body()), auth(**{"Idempotency-Key": request_id})
    fast, route, handed_on = await both(rig, content, headers)
    again = await rig.fast.post("/v1/requests", content=content, headers=headers)
    assert not handed_on
    assert fast.status_code == route.status_code == again.status_code == 202
    assert fast.json() == route.json() == again.json()
    assert fast.json()["id"] == request_id


async def test_an_id_reused_for_another_request_is_409_on_both(rig: Rig) -> None:
    request_id = new_id()
    first = await rig.fast.post(
        "/v1/requests", content=orjson.dumps(body(id=request_id)), headers=auth()
    )
    assert first.status_code == 202
    other = orjson.dumps(body(id=request_id, description="something else"))
    fast, route, handed_on = await both(rig, other, auth())
    assert not handed_on
    assert fast.status_code == route.status_code == 409
    assert fast.json() == route.json()
    assert fast.json()["error"] == "conflict"


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (orjson.dumps(body(skills={})), auth()),
        (b'{"skills": {"first_aid": 2}', auth()),
        (b"[]", auth()),
        (b"", auth()),
        (orjson.dumps(body()), {"Content-Type": "application/json"}),
        (orjson.dumps(body()), auth() | {"Authorization": "Bearer wrong-key-0123456789"}),
        (orjson.dumps(body()), auth() | {"Authorization": "Basic YTpi"}),
        (orjson.dumps(body()), auth() | {"Content-Type": "text/plain"}),
        (orjson.dumps(body()), auth(**{"Idempotency-Key": "not an id!"})),
        (orjson.dumps(body(contact={"webhook_url": "http://127.0.0.1/x"})), auth()),
        (orjson.dumps(body(helpers_needed=0)), auth()),
        (b'{"skills": {"first_aid": NaN}}', auth()),
        (orjson.dumps(body(description="x" * 70_000)), auth()),
    ],
    ids=[
        "empty skills",
        "cut-off JSON",
        "not an object",
        "no body",
        "no key",
        "unknown key",
        "not bearer",
        "text/plain",
        "bad idempotency key",
        "private webhook",
        "zero helpers",
        "NaN",
        "over 64 KiB",
    ],
)
async def test_what_fails_fails_the_same_on_both(
    rig: Rig, content: bytes, headers: dict[str, str]
) -> None:
    fast, route, _ = await both(rig, content, headers)
    assert 400 <= fast.status_code < 500
    assert fast.status_code == route.status_code
    assert fast.json() == route.json()
    assert fast.headers.get("www-authenticate") == route.headers.get("www-authenticate")


async def test_what_the_fast_path_is_unsure_of_goes_to_the_route(rig: Rig) -> None:
    cases = [
        (orjson.dumps(body(skills={})), auth()),  # does not validate
        (b"{", auth()),  # not JSON
        (orjson.dumps(body()), {"Content-Type": "application/json"}),  # no key
        (orjson.dumps(body()), auth() | {"Content-Type": "application/json; charset=utf-8"}),
        (orjson.dumps(body()), auth(**{"Idempotency-Key": "not an id!"})),
    ]
    for content, headers in cases:
        before = len(rig.handed_on)
        await rig.fast.post("/v1/requests", content=content, headers=headers)
        assert rig.handed_on[before:] == ["/v1/requests"], (content, headers)

    # a body sent in chunks, with no Content-Length to hold it to the limit
    async def chunks() -> AsyncIterator[bytes]:
        yield orjson.dumps(body())

    before = len(rig.handed_on)
    chunked = await rig.fast.post("/v1/requests", content=chunks(), headers=auth())
    assert chunked.status_code == 202
    assert rig.handed_on[before:] == ["/v1/requests"]
    # while a valid submission is answered here, and other routes never pass this way
    before = len(rig.handed_on)
    accepted = await rig.fast.post("/v1/requests", content=orjson.dumps(body()), headers=auth())
    missing = await rig.fast.get(f"/v1/requests/{new_id()}", headers=auth())
    assert (accepted.status_code, missing.status_code) == (202, 404)
    assert rig.handed_on[before:] == []


async def test_an_org_over_its_limit_gets_the_same_429_on_both(rig: Rig) -> None:
    content = orjson.dumps(body())
    answers = [
        await rig.fast.post("/v1/requests", content=content, headers=auth("beta")) for _ in range(4)
    ]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]  # a burst of 1 at 1/s
    route = await rig.route.post("/v1/requests", content=content, headers=auth("beta"))
    assert route.status_code == 429
    for answer in (limited[0], route):
        assert answer.json()["error"] == "rate-limited"
        assert int(answer.headers["retry-after"]) >= 1


async def test_a_failure_nobody_foresaw_is_the_same_plain_500_on_both(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(rig.intake, "submit_request", broken)
    fast, route, handed_on = await both(rig, orjson.dumps(body()), auth())
    assert not handed_on
    assert fast.status_code == route.status_code == 500
    assert fast.text == route.text == "Internal Server Error"
