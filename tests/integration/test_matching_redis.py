"""Matching's Redis adapters on a real Redis: atomic capacity, the index, timers."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from leanon_matching.bulk import IndexBuilder, send, set_writes
from leanon_matching.domain.model import Helper, Interval
from leanon_matching.index import HelperIndex
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
        if kind == "zset":  # backwards too: the search reads by descending rank
            out[name] = await redis.zrange(key, 0, -1, withscores=True)
            assert await redis.zrange(key, 0, -1, desc=True, withscores=True) == out[name][::-1]
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


async def _dumps(redis: Redis, prefix: str) -> dict[str, tuple[bytes, bytes]]:
    """Every sorted set under the prefix, without the prefix: its encoding and DUMP bytes."""
    out = {}
    async for key in redis.scan_iter(match=f"{prefix}hz*", count=1000, _type="zset"):
        encoding = await redis.object("encoding", key)
        out[key.decode()[len(prefix) :]] = (encoding, await redis.dump(key))
    return out


async def test_a_bulk_build_writes_the_index_updates_write_byte_for_byte(
    redis: Redis, prefix: str
) -> None:
    """Profiles as the builder goes, then every set restored whole from the listpack it
    encodes: the same keys, members, counts and sizes as the same records applied as updates,
    and each set's DUMP the same bytes as the set ZADD built (ids that Redis stores as
    integers of every width, a set past the listpack limit that Redis converts)."""
    window = Interval(NOW, NOW + timedelta(hours=3))
    first = [
        helper(id="a", skills={"first_aid": 3, "driving": 1}),
        helper(id="b", lat=48.85, lon=2.35, radius_km=120, windows=(window,)),
        helper(id="remote", lat=None, lon=None),
        helper(id="gone", skills={"cooking": 2}),
        helper(id="a", skills={"driving": 4}, radius_km=30),  # a second version, same batch
        *(
            helper(id=i, lat=None, lon=None, skills={"cooking": 1 + n % 5})
            for n, i in enumerate(
                (
                    "7",
                    "0",
                    "-12",
                    "300",
                    "-5000",
                    "70000",
                    "9000000",
                    "3000000000",
                    "-9223372036854775808",
                    "007",
                    "+5",
                    "1e3",
                )
            )
        ),
    ]
    crowd = [helper(id=f"c{n:03}", skills={"sewing": 1 + n % 5}, lat=40.0) for n in range(600)]
    long_ids = [helper(id=f"{n}" + "x" * 127, skills={"knitting": 2}, lat=41.0) for n in range(3)]
    second = [
        helper(id="b", skills={"plumbing": 5}, lat=52.5, lon=13.4, radius_km=8),
        helper(id="c", timezone="Europe/Berlin", weekly=(slot(4, "22:00", "02:00"),)),
        helper(id="300", skills={"cooking": 2}, lat=None, lon=None),
    ]
    updates, bulk = HelperIndex(redis, prefix + "u."), HelperIndex(redis, prefix + "b.")
    builder = IndexBuilder(bulk.prefix)
    for batch, removed in ((first + crowd + long_ids, []), (second, ["gone", "never-there"])):
        await updates.apply([(h.org, h.id, h) for h in batch] + [("o", r, None) for r in removed])
        changes: list[tuple[str, str, dict[str, Any] | None]] = [
            (h.org, h.id, _record(h)) for h in batch
        ]
        changes += [("o", r, None) for r in removed]
        await send(redis, builder.plan(changes, _unexpected))
    parts = builder.entries(3)
    sanitize = (await redis.config_get("sanitize-dump-payload"))["sanitize-dump-payload"]
    await redis.config_set("sanitize-dump-payload", "yes")  # Redis checks every entry
    try:
        await send(redis, set_writes(bulk.prefix, [parts[0], parts[2]]))
        await send(redis, set_writes(bulk.prefix, [parts[1]]))
    finally:
        await redis.config_set("sanitize-dump-payload", sanitize)
    try:
        expected = await _dump(redis, prefix + "u.")
        assert "h:o:gone" not in expected and "h:o:b" in expected
        assert await _dump(redis, prefix + "b.") == expected
        assert _counts_per_level(expected) == expected["hz:o:>"]
        # Members longer than 64 bytes (ids near their limit, with a location) make ZADD
        # turn a set into a skiplist; a restored listpack keeps them, as compact.
        dumps = await _dumps(redis, prefix + "u.")
        assert {e for e, _ in dumps.values()} == {b"listpack", b"skiplist"}
        restored = await _dumps(redis, prefix + "b.")
        assert restored.keys() == dumps.keys()
        for name, (encoding, dumped) in dumps.items():
            if "knitting" not in name:
                assert restored[name] == (encoding, dumped), name
    finally:
        await updates.clear()
        await bulk.clear()


def _unexpected(org: str, helper_id: str, exc: Exception) -> None:
    raise AssertionError(f"{org}/{helper_id} unreadable: {exc!r}")


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
    """Replayed by both planners in loads of at most seven records: helpers that change or
    go in a later load than their first version end up exactly as the same records applied
    one by one."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from leanon_matching import rebuild

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
