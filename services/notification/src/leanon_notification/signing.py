"""X-LeanOn-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-LeanOn-Signature"


def sign(body: bytes, secret: bytes, now: int | None = None) -> str:
    t = int(time.time()) if now is None else now
    mac = hmac.digest(secret, b"%d.%s" % (t, body), "sha256").hex()  # one C call, no HMAC object
    return f"t={t},v1={mac}"


def verify(
    body: bytes, header: str, secret: bytes, tolerance_s: int = 300, now: int | None = None
) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    current = int(time.time()) if now is None else now
    if abs(current - t) > tolerance_s:
        return False
    expected = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))
