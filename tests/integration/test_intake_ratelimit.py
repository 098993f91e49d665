"""Per-org rate limits on real Redis, shared by several intake instances."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from leanon_intake.ratelimit import Limit, RateLimiter


async def test_instances_share_one_budget_taken_in_blocks(redis: Redis, prefix: str) -> None:
    limit = Limit(per_second=100, burst=100)
    assert limit.block == 5
    instances = [RateLimiter(redis, prefix, limit, {}) for _ in range(3)]
    started = time.monotonic()
    allowed = 0
    for i in range(400):  # far past the burst, round robin over the instances
        allowed += await instances[i % 3].wait_s("org") == 0
    elapsed = time.monotonic() - started
    refill = int(elapsed * limit.per_second) + 1
    # never more than the burst plus what refilled meanwhile; blocks left unspent by the other
    # instances are the most it may fall short
    assert limit.burst - 3 * limit.block <= allowed <= limit.burst + refill
    assert await instances[0].wait_s("other-org") == 0  # each org has its own budget


async def test_a_refusal_says_how_long_to_wait(redis: Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, prefix, Limit(per_second=2, burst=2), {"vip": Limit(1000, 1000)})
    assert [await limiter.wait_s("org") == 0 for _ in range(3)] == [True, True, False]
    waited = await limiter.wait_s("org")
    assert 0 < waited <= 0.5 + 0.05  # one call every half second
    assert all([await limiter.wait_s("vip") == 0 for _ in range(50)])  # its own override


async def test_concurrent_calls_share_one_refill_instead_of_each_calling_redis(
    redis: Redis, prefix: str
) -> None:
    limiter = RateLimiter(redis, prefix, Limit(per_second=1000, burst=2000), {})
    assert Limit(1000, 2000).block == 50
    calls = 0
    take = limiter._take

    async def counted(*args: Any) -> float:
        nonlocal calls
        calls += 1
        return await take(*args)

    limiter._take = counted  # type: ignore[method-assign]
    # 500 requests in flight at once, as under an HTTP burst: every one finds the block empty
    waits = await asyncio.gather(*(limiter.wait_s("org") for _ in range(500)))
    assert waits == [0.0] * 500
    assert calls <= 500 // 50 + 1  # one Redis call per block of 50, not one per request
