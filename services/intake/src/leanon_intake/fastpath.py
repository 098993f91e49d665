"""POST /v1/requests on its common path without FastAPI's per-request machinery.

A submission is the call a flood brings thousands of a second, and FastAPI spent most of its
CPU on it in its own machinery (dependency solving, routing, response validation, six layers of
middleware: about 60% of the samples at 900/s, against 16% in LeanOn's code). `IntakeApp` hands
submissions to `SubmitFastPath` before any of that, and it answers the common case, an
authorised JSON body within the size limit that validates, itself: the same model, the same
`Intake` call and the same response. Whatever it is not sure of (another content type, no
Content-Length or one over the limit, no or an unknown API key, a body that is not JSON or does
not validate, an odd Idempotency-Key) goes on to the whole FastAPI app with the body it has
read, so every error is the route's own answer, exactly as before, and the route stays in the
OpenAPI document.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leanon_intake.errors import IntakeError, RateLimited
from leanon_intake.ratelimit import RateLimiter
from leanon_intake.responses import intake_error_response, unavailable_response
from leanon_intake.service import Intake
from leanon_shared.models import ID_PATTERN, RequestSubmission

PATH = "/v1/requests"
IDENTIFIER = re.compile(ID_PATTERN)
WANTED = frozenset({b"authorization", b"content-type", b"content-length", b"idempotency-key"})


class SubmitFastPath:
    def __init__(
        self,
        app: ASGIApp,
        intake: Intake,
        key_to_org: dict[str, str],
        limiter: RateLimiter,
        max_bytes: int,
    ) -> None:
        self.app = app  # everything else, and the route for what is not sure here
        self.intake = intake
        self.key_to_org = key_to_org
        self.limiter = limiter
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A submission (`is_submission`): answered here, or handed on to `app`."""
        seen = _headers(scope)
        org = self._org(seen) if seen is not None else None
        if (
            seen is None
            or org is None
            or seen.get(b"content-type") != b"application/json"
            or not self._within_limit(seen.get(b"content-length"))
        ):
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        submission = None if more else _valid(body)
        key = seen.get(b"idempotency-key")
        if submission is None or (key is not None and not IDENTIFIER.match(key.decode("latin-1"))):
            await self.app(scope, _replaying(body, more, receive), send)
            return
        idempotency_key = key.decode("latin-1") if key is not None else None
        try:
            answer = await self._submit(scope, org, submission, idempotency_key)
        except Exception:
            # What Starlette's ServerErrorMiddleware does for the route: a plain 500, and the
            # error goes on to the server, which logs it.
            await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
            raise
        await answer(scope, receive, send)

    def _within_limit(self, length: bytes | None) -> bool:
        """A Content-Length within the limit (the server holds the body to it); a chunked
        body, or one too large, goes to the app, whose BodyLimit answers as it should."""
        return length is not None and length.isdigit() and int(length) <= self.max_bytes

    def _org(self, seen: dict[bytes, bytes]) -> str | None:
        """The org of a bearer API key (parsed as FastAPI's HTTPBearer does); None otherwise,
        and the route answers 401."""
        value = seen.get(b"authorization")
        if value is None:
            return None
        scheme, _, credentials = value.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not credentials:
            return None
        return self.key_to_org.get(credentials)

    async def _submit(
        self, scope: Scope, org: str, submission: RequestSubmission, idempotency_key: str | None
    ) -> Response:
        try:
            if wait_s := await self.limiter.wait_s(org):
                raise RateLimited(wait_s)
            result = await self.intake.submit_request(
                org, submission, submission.id or idempotency_key
            )
        except IntakeError as exc:
            return intake_error_response(exc)
        except (RedisError, KafkaError) as exc:
            return unavailable_response(exc)
        base = str(Request(scope).base_url).rstrip("/")
        body = orjson.dumps(
            {
                "id": result.id,
                "status": result.status,
                "status_url": f"{base}/v1/requests/{result.id}",
            }
        )
        return Response(body, 202, media_type="application/json")


def is_submission(scope: Scope) -> bool:
    return bool(scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST")


def _headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The headers this path reads (lower-case names); None when one of them comes twice,
    which the route then settles as it always has."""
    seen: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in WANTED:
            if name in seen:
                return None
            seen[name] = value
    return seen


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, or what came before a disconnect (then `more` is True)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _valid(body: bytes) -> RequestSubmission | None:
    try:
        return RequestSubmission.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        return None


def _replaying(body: bytes, more: bool, receive: Receive) -> Receive:
    """`receive` for the route: the body already read first, then whatever comes after."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            message: dict[str, Any] = {"type": "http.request", "body": body, "more_body": more}
            return message
        return await receive()

    return replay
