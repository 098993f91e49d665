"""A submission's fingerprint is built from the body intake sends on, and stays what earlier
versions stored: the hash of pydantic's own JSON of the submission without its id."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from leanon_intake.service import fingerprint_of
from leanon_shared.models import RequestSubmission

START = datetime.now(timezone(timedelta(hours=5, minutes=30))) + timedelta(days=1)
WINDOW = {
    "start": START.isoformat(),
    "end": (START + timedelta(hours=2, microseconds=123)).isoformat(),
}
BODIES: list[dict[str, Any]] = [
    {"skills": {"first_aid": 2}, "window": WINDOW},
    {
        "id": "req-1",
        "skills": {"driving": 1, "cooking": 5},
        "languages": ["de", "uk"],
        "location": {"lat": 1 / 3, "lon": 1e-7},
        "window": WINDOW,
        "urgency": "critical",
        "helpers_needed": 3,
        "expires_at": START.isoformat(),
        "description": 'Einkäufe ✓ 🙂 "quoted" \\ \u2028 \x01',
        "contact": {"webhook_url": "https://x.example.org/h?a=1&b=é"},
    },
    {"skills": {"shopping": 4}, "window": WINDOW, "contact": {"email": "a@example.org"}},
]


def earlier_fingerprint(submission: RequestSubmission) -> str:
    body = submission.model_dump_json(exclude={"id"}).encode()
    return hashlib.blake2b(body, digest_size=12).hexdigest()


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_fingerprint_is_the_one_earlier_versions_stored(body: dict[str, Any]) -> None:
    submission = RequestSubmission.model_validate(body)
    assert fingerprint_of(submission.model_dump(mode="json")) == earlier_fingerprint(submission)


def test_the_id_does_not_count_and_the_rest_does() -> None:
    first = RequestSubmission.model_validate(BODIES[1]).model_dump(mode="json")
    other_id = RequestSubmission.model_validate(BODIES[1] | {"id": "req-2"}).model_dump(mode="json")
    more = RequestSubmission.model_validate(BODIES[1] | {"helpers_needed": 4}).model_dump(
        mode="json"
    )
    assert fingerprint_of(first) == fingerprint_of(other_id)
    assert fingerprint_of(first) != fingerprint_of(more)
