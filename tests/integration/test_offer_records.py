"""The offer record is the one arbiter between answers and timeouts, also when the moves of
many concurrent callers go to Redis together."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from redis.asyncio import Redis

from leanon_shared import offers as offers_module
from leanon_shared.offers import OfferRecord, OfferRecords

ORG = "o"


def record(offer_id: str, status: str = "offered") -> OfferRecord:
    return OfferRecord(ORG, offer_id, f"r-{offer_id}", f"h-{offer_id}", "reg", status)


async def test_moves_of_one_turn_each_get_their_own_answer(redis: Redis, prefix: str) -> None:
    offers = OfferRecords(redis, prefix)
    await offers.create_many([record(f"o{i}") for i in range(200)])
    await offers.create(record("taken", "accepted"))
    answers = await asyncio.gather(
        *(offers.move_returning(ORG, f"o{i}", "accepted") for i in range(200)),
        offers.move_returning(ORG, "o7", "expired"),  # the timeout lost the race in that turn
        offers.move_returning(ORG, "o8", "accepted"),  # a repeated answer
        offers.move_returning(ORG, "taken", "declined"),
        offers.move_returning(ORG, "nobody", "accepted"),
    )
    assert [outcome for outcome, _ in answers[:200]] == ["ok"] * 200
    assert answers[0][1] == OfferRecord(ORG, "o0", "r-o0", "h-o0", "reg", "accepted")
    assert answers[200] == ("accepted", record("o7", "accepted"))
    assert answers[201][0] == "same"
    assert answers[202] == ("accepted", record("taken", "accepted"))
    assert answers[203] == ("missing", None)
    assert (await offers.get(ORG, "o7")) == record("o7", "accepted")
    assert await offers.move(ORG, "taken", "dropped") == "ok"  # dropped may follow accepted


async def test_a_lost_script_is_loaded_again_and_the_moves_made(
    redis: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after a Redis restart: a script of this test's own is new to Redis."""
    script = offers_module._TRANSITION + f"-- {prefix}"
    monkeypatch.setattr(offers_module, "_TRANSITION", script)
    offers = OfferRecords(redis, prefix)
    assert await redis.script_exists(hashlib.sha1(script.encode()).hexdigest()) == [False]
    await offers.create(record("x"))
    assert await offers.move(ORG, "x", "declined") == "ok"
    assert (await offers.get(ORG, "x")) == record("x", "declined")
