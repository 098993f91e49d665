"""Intake's error answers: {"error": code, "detail": ...}, the same from every route."""

from __future__ import annotations

import logging
import math

from fastapi.responses import JSONResponse

from leanon_intake.errors import IntakeError, Invalid, RateLimited

log = logging.getLogger(__name__)


def intake_error_response(exc: IntakeError) -> JSONResponse:
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    elif exc.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, Invalid):
        fields = [{"loc": list(exc.loc), "msg": exc.detail, "type": "value_error"}]
        return JSONResponse({"error": exc.code, "detail": fields}, exc.status)
    return JSONResponse({"error": exc.code, "detail": exc.detail}, exc.status, headers=headers)


def unavailable_response(exc: Exception) -> JSONResponse:
    """503 for Kafka or Redis being unavailable: the caller retries later."""
    log.error("dependency unavailable: %s", type(exc).__name__)
    body = {"error": "unavailable", "detail": "a dependency is unavailable; retry later"}
    return JSONResponse(body, 503, headers={"Retry-After": "1"})
