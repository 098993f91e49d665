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
    """422 like a failed validation: `detail` lists the failing fields."""

    status = 422
    code = "invalid"

    def __init__(self, detail: str, loc: tuple[str, ...] = ("body",)) -> None:
        super().__init__(detail)
        self.loc = loc


class RateLimited(IntakeError):
    status = 429
    code = "rate-limited"

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many calls for this org; retry in {retry_after_s:.2f}s")
        self.retry_after_s = retry_after_s
