"""Commands packed by hiredis are the bytes redis-py's own packer makes."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Connection
from redis.exceptions import DataError

from leanon_shared.runtime import HiredisPackingConnection

COMMANDS: list[tuple[Any, ...]] = [
    ("SET", "k", "v"),
    ("EVALSHA", "a" * 40, 2, "k1", b"k2", 1.5, -3, 0.1, 1e20, -0.0, 2**63 - 1),
    ("MSET", "é", "ünïcödé ✓", b"\x00\xff\r\n", ""),
    ("SCRIPT LOAD", "return 1"),  # two words: sent as two arguments
    (b"CONFIG GET", b"maxmemory"),
    ("HSET", "h", "f", "x" * 100_000),  # over redis-py's buffer cutoff
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_hiredis_packs_what_redis_py_packs(command: tuple[Any, ...]) -> None:
    ours, theirs = HiredisPackingConnection(), Connection()
    assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command))


@pytest.mark.parametrize("bad", [None, True, object()])
def test_what_redis_py_refuses_is_refused_alike(bad: object) -> None:
    with pytest.raises(DataError):
        HiredisPackingConnection().pack_command("SET", "k", bad)
