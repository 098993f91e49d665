"""A rebuild restores sets in Redis 7.0's DUMP format: older servers are refused up front."""

from typing import Any

import pytest

from leanon_matching.rebuild import check_redis_version


class ServerInfo:
    def __init__(self, version: str) -> None:
        self.version = version

    async def info(self, section: str) -> dict[str, Any]:
        assert section == "server"
        return {"redis_version": self.version}


@pytest.mark.parametrize("version", ["7.0.15", "7.2.4", "7.4.1", "8.0.2", "7.0"])
async def test_redis_7_and_later_are_accepted(version: str) -> None:
    await check_redis_version(ServerInfo(version))  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["6.2.14", "5.0.7"])
async def test_older_redis_is_refused_with_its_version(version: str) -> None:
    with pytest.raises(RuntimeError, match=f"Redis 7.0 or later; this server is {version}"):
        await check_redis_version(ServerInfo(version))  # type: ignore[arg-type]
