"""Matching's Redis adapters on a real Redis: atomic capacity, the index, timers."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from leanon_matching.domain.model import Helper, Interval
from leanon_matching.index import HelperIndex, plan_load
from leanon_matching.rebuild import replay
from leanon_matching.reservations import Reservations
from leanon_matching.store import Timers
from tests.conftest import Infra
from tests.unit.factories import helper, request, slot

NOW = datetime(2026, 12, 1, 8, tzinfo=UTC)
START = NOW + timedelta(hours=2)


async def test_concurrent_reservations_never_exceed_capacity(redis: Redis, prefix: str) -> None:
    res = Reservations(redis, prefix)
    results = await asyncio.gather(
        *(
            res.reserve("o", "h1", f"offer-{i}", START, START + timedelta(hours=1), 2, NOW)
            for i in range(50)
        )
    )
    assert sum(results) == 2
    assert await res.loads("o", ["h1"], START, START + timedelta(hours=1), NOW) == [(2, 0)]


async def test_capacity_counts_only_overlapping_windows(redis: Redis, prefix: str) -> None:
    res = Reservations(redis, prefix)
    hour = timedelta(hours=1)
    assert await res.reserve("o", "h1", "a", START, START + hour, 1, NOW)
    assert not await res.reserve("o", "h1", "b", START + hour / 2, START + 2 * hour, 1, NOW)
    assert await res.reserve("o", "h1", "c", START + hour, START + 2 * hour, 1, NOW)
    assert await res.reserve("o", "h1", "a", START, START + hour, 1, NOW)  # same offer: idempotent
    await res.release("o", "h1", "a")
    assert not await res.reserve("o", "h1", "b", START + hour / 2, START + 1.5 * hour, 1, NOW)
    assert await res.reserve("o", "h1", "d", START, START + hour / 2, 1, NOW)


async def test_ended_assignments_stop_counting(redis: Redis, prefix: str) -> None:
    res = Reservations(redis, prefix)
    past = NOW - timedelta(hours=3)
    assert await res.reserve("o", "h1", "old", past, past + timedelta(hours=1), 1, past)
    assert await res.reserve("o", "h1", "new", past, NOW + timedelta(hours=1), 1, NOW)


async def test_candidates_come_with_their_load_and_recent_offers(redis: Redis, prefix: str) -> None:
    index, res = HelperIndex(redis, prefix), Reservations(redis, prefix)
    await index.upsert(helper(id="busy", capacity=3))
    req = request()
    await res.reserve("o", "busy", "x1", req.window.start, req.window.end, 3, NOW)
    await res.count_offer("o", "busy", NOW)
    await res.count_offer("o", "busy", NOW - timedelta(days=2))
    [found] = await index.candidates(req, loads=res.load_query("o", NOW))
    assert (found.helper.id, found.load, found.recent) == ("busy", 1, 2)


async def test_index_finds_helpers_whose_radius_reaches_the_request(
    redis: Redis, prefix: str
) -> None:
    index = HelperIndex(redis, prefix)
    await index.upsert(helper(id="near", radius_km=5))
    await index.upsert(helper(id="far-small", lat=52.8, lon=13.4, radius_km=5))  # ~32 km away
    await index.upsert(helper(id="far-wide", lat=52.8, lon=13.4, radius_km=80))
    await index.upsert(helper(id="other-skill", skills={"driving": 3}))
    found = {c.helper.id for c in await index.candidates(request())}
    assert {"near", "far-wide"} <= found
    assert "other-skill" not in found


async def test_index_update_and_removal_count_for_the_next_request(
    redis: Redis, prefix: str
) -> None:
    index = HelperIndex(redis, prefix)
    await index.upsert(helper(id="h"))
    await index.upsert(helper(id="h", skills={"driving": 3}))
    assert await index.candidates(request()) == []
    assert [c.helper.id for c in await index.candidates(request(skills={"driving": 1}))] == ["h"]
    await index.remove("o", "h")
    assert await index.candidates(request(skills={"driving": 1})) == []


async def test_remote_requests_search_the_whole_org(redis: Redis, prefix: str) -> None:
    index = HelperIndex(redis, prefix)
    await index.upsert(helper(id="anywhere", lat=-33.9, lon=151.2))
    found = await index.candidates(request(lat=None, lon=None))
    assert [c.helper.id for c in found] == ["anywhere"]


async def test_due_timers_are_leased_not_lost(redis: Redis, prefix: str) -> None:
    timers = Timers(redis, prefix)
    member = {"kind": "offer", "offer_id": "o1"}
    await timers.schedule(member, 100.0)
    assert await timers.lease_due(50.0, 30, 10) == []
    assert await timers.lease_due(101.0, 30, 10) == [member]
    assert await timers.lease_due(102.0, 30, 10) == []  # leased to the first reader
    assert await timers.lease_due(140.0, 30, 10) == [member]  # the reader died: fires again
    await timers.done([member])
    assert await timers.lease_due(1000.0, 30, 10) == []


def _record(h: Helper) -> dict[str, Any]:
    """The helpers-topic record for a helper."""
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    hm = lambda m: f"{m // 60:02d}:{m % 60:02d}"  # noqa: E731
    return {
        "org": h.org,
        "helper_id": h.id,
        "profile": {
            "skills": h.skills,
            "languages": sorted(h.languages),
            "location": None if h.lat is None else {"lat": h.lat, "lon": h.lon},
            "radius_km": h.radius_km,
            "availability": {
                "timezone": h.timezone,
                "weekly": [
                    {"day": days[s.weekday], "start": hm(s.start), "end": hm(s.end)}
                    for s in h.weekly
                ],
                "windows": [
                    {"start": w.start.isoformat(), "end": w.end.isoformat()} for w in h.windows
                ],
            },
            "capacity": h.capacity,
        },
    }


async def _dump(redis: Redis, prefix: str) -> dict[str, object]:
    """Every index key under the prefix, without the prefix, with its contents."""
    out: dict[str, object] = {}
    async for key in redis.scan_iter(match=f"{prefix}h*", count=1000):
        kind = (await redis.type(key)).decode()
        name = key.decode()[len(prefix) :]
        if kind == "zset":
            out[name] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            out[name] = await redis.hgetall(key)
        else:
            out[name] = await redis.get(key)
    return out


def _counts_per_level(dump: dict[str, Any]) -> dict[bytes, bytes]:
    """What the search's counts hash must hold: for every cell set ("hz:o:<tier>:<cell>:
    <skill>") and level, how many of its members are at or above that level."""
    out: dict[bytes, bytes] = {}
    for name, members in dump.items():
        if name.count(":") == 4:
            cell_set = name.removeprefix("hz:o:")
            for level in range(1, 6):
                if n := sum(score >= level for _, score in members):
                    out[f"{cell_set}>{level}".encode()] = str(n).encode()
    return out


async def test_a_rebuilds_bulk_load_writes_the_same_index_as_updates(
    redis: Redis, prefix: str
) -> None:
    window = Interval(NOW, NOW + timedelta(hours=3))
    first = [
        helper(id="a", skills={"first_aid": 3, "driving": 1}),
        helper(id="b", lat=48.85, lon=2.35, radius_km=120, windows=(window,)),
        helper(id="remote", lat=None, lon=None),
        helper(id="gone", skills={"cooking": 2}),
        helper(id="a", skills={"driving": 4}, radius_km=30),  # a second version, same batch
    ]
    second = [
        helper(id="b", skills={"plumbing": 5}, lat=52.5, lon=13.4, radius_km=8),
        helper(id="c", timezone="Europe/Berlin", weekly=(slot(4, "22:00", "02:00"),)),
    ]
    updates, bulk = HelperIndex(redis, prefix + "u."), HelperIndex(redis, prefix + "b.")
    loaded: set[tuple[str, str]] = set()
    for batch, removed in ((first, []), (second, ["gone", "never-there"])):
        await updates.apply([(h.org, h.id, h) for h in batch] + [("o", r, None) for r in removed])
        changes: list[tuple[str, str, dict[str, Any] | None]] = [
            (h.org, h.id, _record(h)) for h in batch
        ]
        changes += [("o", r, None) for r in removed]
        await bulk.load(plan_load(changes, loaded, bulk.prefix))
    try:
        expected = await _dump(redis, prefix + "u.")
        assert "h:o:gone" not in expected and "h:o:b" in expected
        assert await _dump(redis, prefix + "b.") == expected
        assert _counts_per_level(expected) == expected["hz:o:>"]
    finally:
        await updates.clear()
        await bulk.clear()


async def test_clear_drops_an_old_or_unfinished_index_and_skips_a_new_prefix(
    redis: Redis, prefix: str
) -> None:
    index = HelperIndex(redis, prefix)
    assert await index.clear() == 0  # a new prefix: nothing recorded, nothing to scan for
    await index.upsert(helper(id="h"))  # a build that stops here, unfinished
    assert await index.clear() > 0  # the building mark makes the next clear look
    assert await index.candidates(request()) == []
    await index.upsert(helper(id="h"))
    await index.mark_current()
    assert not await redis.exists(index.building_key)
    assert await index.clear() > 0  # a finished index, e.g. of another version
    assert await index.candidates(request()) == []


async def test_a_rebuild_skips_unreadable_records_and_keeps_the_rest(
    infra: Infra, redis: Redis, prefix: str
) -> None:
    """Replayed from a real topic through the planner process: a record that is not JSON, and
    one whose profile cannot be packed, are skipped; the others and a removal still count."""
    topic = f"{prefix}helpers"
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for h in (helper(id="a"), helper(id="b"), helper(id="gone")):
            await producer.send_and_wait(topic, orjson.dumps(_record(h)), key=f"o/{h.id}".encode())
        broken = _record(helper(id="broken"))
        del broken["profile"]["skills"]
        await producer.send_and_wait(topic, orjson.dumps(broken), key=b"o/broken")
        await producer.send_and_wait(topic, b"{not json", key=b"o/garbled")
        await producer.send_and_wait(topic, None, key=b"o/gone")
    finally:
        await producer.stop()
    index = HelperIndex(redis, prefix)
    try:
        assert await replay(index, infra.kafka_bootstrap, topic) == 6
        profiles = {key.decode() async for key in redis.scan_iter(match=f"{prefix}h:o:*")}
        assert profiles == {f"{prefix}h:o:a", f"{prefix}h:o:b"}
        assert {c.helper.id for c in await index.candidates(request())} == {"a", "b"}
    finally:
        await index.clear()


async def test_a_rebuild_from_many_partitions_and_loads_matches_the_updates(
    infra: Infra, redis: Redis, prefix: str, monkeypatch: Any
) -> None:
    """Replayed through both planners in loads of seven, a record at a time: helpers that
    change or go in a later load than their first version end up exactly as the same records
    applied one by one."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from leanon_matching import rebuild

    fetched = rebuild.replay_topic

    async def one_at_a_time(bootstrap: str, topic: str, apply: Any, progress: Any) -> int:
        async def each(batch: Any) -> None:
            for record in batch:
                await apply([record])

        return await fetched(bootstrap, topic, each, progress)

    monkeypatch.setattr(rebuild, "replay_topic", one_at_a_time)
    monkeypatch.setattr(rebuild, "LOAD_CHUNK", 7)
    topic = f"{prefix}helpers"
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()
    first = [
        helper(id=f"h{i}", skills={"first_aid": 1 + i % 5, "driving": 1 + i % 3}, lat=52 + i / 100)
        for i in range(40)
    ]
    later = [helper(id=f"h{i}", skills={"cooking": 4}, radius_km=40) for i in range(0, 40, 3)]
    gone = [f"h{i}" for i in range(1, 40, 5)]
    updates = HelperIndex(redis, prefix + "u.")
    await updates.apply([(h.org, h.id, h) for h in first])
    await updates.apply([(h.org, h.id, h) for h in later] + [("o", g, None) for g in gone])
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for h in first + later:
            await producer.send(topic, orjson.dumps(_record(h)), key=f"o/{h.id}".encode())
        for g in gone:
            await producer.send(topic, None, key=f"o/{g}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    rebuilt = HelperIndex(redis, prefix + "b.")
    try:
        assert await replay(rebuilt, infra.kafka_bootstrap, topic) == 40 + len(later) + len(gone)
        expected = await _dump(redis, prefix + "u.")
        assert "h:o:h1" not in expected and "h:o:h3" in expected
        assert await _dump(redis, prefix + "b.") == expected
    finally:
        await updates.clear()
        await rebuilt.clear()
