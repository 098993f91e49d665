"""Intake's outcomes that are not success, each with an HTTP status and a reason."""

from __future__ import annotations


class IntakeError(Exception):
    status = 400
    code = "bad-request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(IntakeError):
    status = 404
    code = "not-found"


class Conflict(IntakeError):
    status = 409
    code = "conflict"


class Invalid(IntakeError):
    status = 422
    code = "invalid"
