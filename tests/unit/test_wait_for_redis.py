"""A starting service waits for a Redis that is still loading its dataset, with a bound."""

import logging

import pytest
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError

from leanon_shared.runtime import wait_for_redis


class LoadingRedis:
    """Answers LOADING (or refuses the connection) a number of times, then PONG."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.pings = 0

    async def ping(self) -> bool:
        self.pings += 1
        if self.failures:
            raise self.failures.pop(0)
        return True


async def test_it_waits_while_redis_loads_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = LoadingRedis(
        [
            RedisConnectionError("Connection refused"),
            BusyLoadingError("Redis is loading the dataset in memory"),
            BusyLoadingError("Redis is loading the dataset in memory"),
        ]
    )
    with caplog.at_level(logging.WARNING, logger="leanon_shared.runtime"):
        await wait_for_redis(redis, within_s=30, every_s=0.001)  # type: ignore[arg-type]
    assert redis.pings == 4
    assert [r.getMessage() for r in caplog.records] == ["waiting for Redis: Connection refused"]


async def test_it_gives_up_after_the_bound_with_the_reason() -> None:
    redis = LoadingRedis([BusyLoadingError("Redis is loading the dataset in memory")] * 10_000)
    with pytest.raises(TimeoutError, match=r"not ready within 0\.05s: Redis is loading"):
        await wait_for_redis(redis, within_s=0.05, every_s=0.001)  # type: ignore[arg-type]
    assert 2 <= redis.pings < 10_000  # it tried more than once, and stopped


async def test_a_ready_redis_is_asked_once() -> None:
    redis = LoadingRedis([])
    await wait_for_redis(redis, within_s=0)  # type: ignore[arg-type]
    assert redis.pings == 1
