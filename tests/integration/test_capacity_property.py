"""No helper ever holds more than its capacity of overlapping windows, whatever the order of
reservations, releases and redeliveries, on a real Redis."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from leanon_matching.reservations import Reservations
from tests.conftest import Infra

BASE = datetime(2026, 12, 1, 8, tzinfo=UTC)
op = st.tuples(
    st.sampled_from(["reserve", "release", "redeliver"]),
    st.integers(0, 2),  # helper
    st.integers(0, 11),  # offer
    st.integers(0, 8),  # start hour offset
    st.integers(1, 3),  # length in hours
)


def overlap_peak(held: dict[str, tuple[datetime, datetime]]) -> int:
    points = sorted({t for s, e in held.values() for t in (s, e)})
    return max((sum(1 for s, e in held.values() if s <= p < e) for p in points), default=0)


async def play(redis_url: str, ops: list[tuple[str, int, int, int, int]], capacity: int) -> None:
    redis = Redis.from_url(redis_url, protocol=2)
    res = Reservations(redis, f"p{uuid.uuid4().hex[:8]}.")
    windows: dict[tuple[int, int], tuple[datetime, datetime]] = {}
    try:
        for kind, h, o, start, length in ops:
            offer = f"o{o}"
            if kind == "release":
                await res.release("org", f"h{h}", offer)
                continue
            window = windows.setdefault(
                (h, o), (BASE + timedelta(hours=start), BASE + timedelta(hours=start + length))
            )
            tries = 2 if kind == "redeliver" else 1
            for _ in range(tries):
                await res.reserve("org", f"h{h}", offer, *window, capacity, BASE)
            raw = await redis.hgetall(res.key("org", f"h{h}"))
            held = {}
            for k, v in raw.items():
                s, e = (int(x) for x in v.decode().split(","))
                held[k.decode()] = (datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(e, UTC))
            assert overlap_peak(held) <= capacity
    finally:
        await redis.aclose()


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op, max_size=40), capacity=st.integers(1, 3))
def test_capacity_holds_under_any_interleaving(infra: Infra, ops: list, capacity: int) -> None:  # type: ignore[type-arg]
    asyncio.run(play(infra.redis_url, ops, capacity))
