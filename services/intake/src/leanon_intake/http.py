# FastAPI reads annotations at runtime, so this module does not postpone them.
"""The HTTP API of the contract: thin routes over the Intake service."""

from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leanon_intake.errors import IntakeError, RateLimited
from leanon_intake.ratelimit import RateLimiter
from leanon_intake.responses import intake_error_response, unavailable_response
from leanon_intake.service import Intake
from leanon_shared.models import ID_PATTERN, HelperProfile, Identifier, RequestSubmission

bearer = HTTPBearer(auto_error=False)
IdPath = Annotated[str, Path(pattern=ID_PATTERN)]


class Unauthorized(IntakeError):
    status = 401
    code = "unauthorized"


class ErrorBody(BaseModel):
    error: str
    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class InvalidBody(BaseModel):
    error: str
    detail: list[FieldError]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No API key, or an unknown one"},
    404: {"model": ErrorBody, "description": "Unknown to this org (ids never leak across orgs)"},
    413: {"model": ErrorBody, "description": "Body over the size limit"},
    422: {"model": InvalidBody, "description": "Invalid body or parameters, field by field"},
    429: {
        "model": ErrorBody,
        "description": "Over the org's rate limit",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    },
    503: {"model": ErrorBody, "description": "Kafka or Redis unavailable; retry later"},
}
CONFLICT_RESPONSE: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "No longer possible in the current state"}
}


class HelperSaved(BaseModel):
    id: str
    version: int


class RequestAccepted(BaseModel):
    id: str
    status: str
    status_url: str


class OfferAnswered(BaseModel):
    offer_id: str
    status: str


def build_router(intake: Intake, key_to_org: dict[str, str], limiter: RateLimiter) -> APIRouter:
    async def org_of(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized("missing bearer API key")
        org = key_to_org.get(credentials.credentials)
        if org is None:
            raise Unauthorized("unknown API key")
        if wait_s := await limiter.wait_s(org):
            raise RateLimited(wait_s)
        return org

    Org = Annotated[str, Depends(org_of)]
    router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

    @router.put(
        "/helpers/{helper_id}",
        response_model=HelperSaved,
        status_code=200,
        responses={201: {"model": HelperSaved}},
    )
    async def put_helper(
        helper_id: IdPath, profile: HelperProfile, org: Org, response: Response
    ) -> HelperSaved:
        version, created = await intake.upsert_helper(org, helper_id, profile)
        response.status_code = 201 if created else 200
        return HelperSaved(id=helper_id, version=version)

    @router.get("/helpers/{helper_id}")
    async def get_helper(helper_id: IdPath, org: Org) -> dict[str, Any]:
        return await intake.get_helper(org, helper_id)

    @router.delete("/helpers/{helper_id}", status_code=204)
    async def delete_helper(helper_id: IdPath, org: Org) -> Response:
        await intake.remove_helper(org, helper_id)
        return Response(status_code=204)

    @router.post(
        "/requests", status_code=202, response_model=RequestAccepted, responses=CONFLICT_RESPONSE
    )
    async def post_request(
        submission: RequestSubmission,
        org: Org,
        request: Request,
        idempotency_key: Annotated[Identifier | None, Header()] = None,
    ) -> RequestAccepted:
        result = await intake.submit_request(org, submission, submission.id or idempotency_key)
        # What request.url_for("get_request", ...) gives, without searching the routes for
        # it on every submission (ids are URL-safe by their pattern)
        base = str(request.base_url).rstrip("/")
        return RequestAccepted(
            id=result.id, status=result.status, status_url=f"{base}/v1/requests/{result.id}"
        )

    @router.get("/requests/{request_id}", name="get_request")
    async def get_request(request_id: IdPath, org: Org) -> dict[str, Any]:
        return await intake.get_request(org, request_id)

    @router.post("/requests/{request_id}/cancel", responses=CONFLICT_RESPONSE)
    async def cancel_request(request_id: IdPath, org: Org) -> dict[str, Any]:
        return await intake.cancel_request(org, request_id)

    for answer, verb in (("accepted", "accept"), ("declined", "decline"), ("dropped", "drop")):
        router.add_api_route(
            f"/offers/{{offer_id}}/{verb}",
            _answer_route(intake, answer, org_of),
            methods=["POST"],
            response_model=OfferAnswered,
            responses=CONFLICT_RESPONSE,
            name=f"{verb}_offer",
        )
    return router


def _answer_route(intake: Intake, answer: str, org_of: Any) -> Any:
    async def route(offer_id: IdPath, org: Annotated[str, Depends(org_of)]) -> OfferAnswered:
        return OfferAnswered(**await intake.answer_offer(org, offer_id, answer))

    return route


def install_error_handlers(app: FastAPI) -> None:
    """Every error answers {"error": code, "detail": ...}; 422 lists the failing fields."""

    async def on_intake_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, IntakeError)
        return intake_error_response(exc)

    async def on_invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse(jsonable_encoder({"error": "invalid", "detail": fields}), 422)

    async def on_unavailable(_: Request, exc: Exception) -> JSONResponse:
        return unavailable_response(exc)

    app.add_exception_handler(IntakeError, on_intake_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(RedisError, on_unavailable)
    app.add_exception_handler(KafkaError, on_unavailable)


class BodyLimit:
    """413 for bodies over the limit, counted before anything parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large(send)
                return
        seen = 0
        exceeded = answered = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Frameworks may catch the error while reading and answer 400 themselves;
            # whatever they answer, the caller learns the body was too large.
            nonlocal answered
            if not exceeded:
                answered = answered or message["type"] == "http.response.start"
                await send(message)
            elif not answered and message["type"] == "http.response.start":
                answered = True
                await self._too_large(send)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not answered:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        body = b'{"error":"too-large","detail":"body exceeds %d bytes"}' % self.max_bytes
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
