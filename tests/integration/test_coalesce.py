"""What notification's hot path gathers per loop turn, on real Redis and Kafka: each caller gets
its own answer although a turn's Redis calls go as one command per kind, and its reports as one
batch per partition."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from aiokafka.partitioner import DefaultPartitioner
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from leanon_shared import coalesce
from leanon_shared.coalesce import CoalescedScript, CoalescingPublisher, CoalescingRedis
from leanon_shared.kafka import EventBus, ensure_topics
from leanon_shared.settings import LeanOnSettings
from leanon_shared.topics import Topics
from tests.conftest import Infra, tap, wait_for


async def test_one_turns_claims_each_get_their_own_answer(redis: Redis, prefix: str) -> None:
    batch = CoalescingRedis(redis, claim_ttl_ms=60_000)
    sent = [f"{prefix}sent:{i}" for i in range(300)]
    await redis.set(sent[7], b"done", ex=60)
    await redis.set(sent[8], b'{"delivered": true}', ex=60)
    await redis.set(sent[9] + ":claim", b"1", ex=60)  # another consumer is attempting it
    # Every claim of this turn, and a second claim of the same delivery, in one call.
    claims = [batch.claim(key, key + ":claim") for key in sent] + [
        batch.claim(sent[0], sent[0] + ":claim")
    ]
    answers = await asyncio.gather(*claims)
    assert answers[7] == b"done"
    assert answers[8] == b'{"delivered": true}'
    assert answers[9] == b"busy"
    assert answers[-1] == b"busy"  # the first claim of sent[0] in that turn won
    others = [a for i, a in enumerate(answers[:-1]) if i not in (7, 8, 9)]
    assert others == [b"ok"] * 297
    assert 0 < await redis.pttl(sent[0] + ":claim") <= 60_000


async def test_a_batch_of_reads_and_claims_split_over_flushes_keeps_each_answer(
    redis: Redis, prefix: str
) -> None:
    """read_and_claim_many waits once for all its answers, though at most `max_batch` calls of
    a kind go in one flush: 7 of them go out in three."""
    batch = CoalescingRedis(redis, claim_ttl_ms=60_000, max_batch=3)
    contacts = [f"{prefix}contact:{i}" for i in range(7)]
    sent = [f"{prefix}sent:{i}" for i in range(7)]
    for i in (0, 2, 6):
        await redis.set(contacts[i], b"c%d" % i, ex=60)
    await redis.set(sent[4], b"done", ex=60)
    await redis.set(sent[5] + ":claim", b"1", ex=60)  # another consumer is attempting it
    items = [(c, k, k + ":claim") for c, k in zip(contacts, sent, strict=True)]
    answers = await batch.read_and_claim_many(items)
    assert answers == [
        (b"c0", b"ok"),
        (None, b"ok"),
        (b"c2", b"ok"),
        (None, b"ok"),
        (None, b"done"),
        (None, b"busy"),
        (b"c6", b"ok"),
    ]
    again = await batch.read_and_claim_many(items[:2])
    assert [claimed for _, claimed in again] == [b"busy", b"busy"]  # ours, from the first call
    assert await batch.read_and_claim_many([]) == []


async def test_a_batch_of_reads_and_claims_fails_as_one_when_redis_does(prefix: str) -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)  # nothing listens there
    batch = CoalescingRedis(dead, timeout_s=1.0)
    # refused, retried as redis-py retries, until the flush's own bound: a RedisError either way
    with pytest.raises(RedisError):
        await batch.read_and_claim_many([(f"{prefix}c", f"{prefix}s", f"{prefix}s:claim")])
    await dead.aclose()


async def test_writes_gets_and_deletes_of_one_turn(redis: Redis, prefix: str) -> None:
    batch = CoalescingRedis(redis, claim_ttl_ms=1000)
    keys = [f"{prefix}k:{i}" for i in range(50)]
    await asyncio.gather(*(batch.write(k, b"v%d" % i, 100 + i) for i, k in enumerate(keys)))
    batch.write_soon(f"{prefix}soon", b"x", 30)
    got = await asyncio.gather(*(batch.get(k) for k in [*keys, f"{prefix}missing"]))
    assert got == [b"v%d" % i for i in range(50)] + [None]
    assert await redis.get(f"{prefix}soon") == b"x"  # queued before the gets: same pipeline
    assert 95 < await redis.ttl(keys[5]) <= 105
    await asyncio.gather(*(batch.delete(k) for k in keys[:10]))
    assert await redis.exists(*keys) == 40


async def test_creations_of_one_turn_first_write_wins(redis: Redis, prefix: str) -> None:
    batch = CoalescingRedis(redis)
    keys = [f"{prefix}c:{i}" for i in range(20)]
    await redis.set(keys[3], b"before", ex=60)
    calls = [batch.create(k, b"v%d" % i, 100) for i, k in enumerate(keys)]
    calls.append(batch.create(keys[0], b"second", 100))  # the same key twice in one turn
    created = await asyncio.gather(*calls)
    assert created == [i != 3 for i in range(20)] + [False]
    assert await redis.get(keys[3]) == b"before"
    assert await redis.get(keys[0]) == b"v0"
    assert 95 < await redis.ttl(keys[5]) <= 100


async def test_scripts_redis_does_not_have_are_loaded_and_the_calls_made(
    redis: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after a Redis restart. Scripts of this test's own (a comment makes them new to Redis)
    rather than SCRIPT FLUSH, which would pull the scripts from under everyone sharing Redis."""
    monkeypatch.setattr(coalesce, "CLAIM", coalesce.CLAIM + f"-- {prefix}")
    monkeypatch.setattr(coalesce, "WRITE", coalesce.WRITE + f"-- {prefix}")
    monkeypatch.setattr(coalesce, "CREATE", coalesce.CREATE + f"-- {prefix}")
    batch = CoalescingRedis(redis, claim_ttl_ms=1000)
    shas = (batch._claim_sha, batch._write_sha, batch._create_sha)
    assert await redis.script_exists(*shas) == [False, False, False]
    key = f"{prefix}sent:x"
    claimed, _, created = await asyncio.gather(
        batch.claim(key, key + ":claim"),
        batch.write(f"{prefix}other", b"done", 60),
        batch.create(f"{prefix}new", b"n", 60),
    )
    assert claimed == b"ok"  # made once the scripts were loaded, not failed
    assert created is True
    assert await redis.get(f"{prefix}other") == b"done"
    assert await redis.exists(key + ":claim") == 1


async def test_reports_of_one_turn_land_where_aiokafka_would_put_their_keys(
    infra: Infra, prefix: str
) -> None:
    settings = LeanOnSettings(
        kafka_bootstrap=infra.kafka_bootstrap, topic_prefix=prefix, topic_partitions=3
    )
    topic = Topics(prefix).events
    await ensure_topics(settings, Topics(prefix))
    bus = EventBus(settings, "test")
    await bus.start()
    seen: list[ConsumerRecord[bytes, bytes]] = []
    try:
        publish = CoalescingPublisher(bus, topic)
        keys = [f"request-{i}".encode() for i in range(60)]
        await asyncio.gather(
            *(publish(b'{"n": %d}' % i, k, [("ce_type", b"t")]) for i, k in enumerate(keys))
        )
        partitions = sorted(await bus.kafka.partitions_for(topic))
        async with tap(infra, [topic], seen.append):
            await wait_for(lambda: len(seen) == len(keys), what="every record")
    finally:
        await bus.stop()
    where = {r.key: r.partition for r in seen}
    assert where == {k: DefaultPartitioner()(k, partitions, partitions) for k in keys}
    assert len(set(where.values())) == 3  # spread, not all on one partition
    assert all(r.headers == (("ce_type", b"t"),) for r in seen)
    by_key = {r.key: r.value for r in seen}
    assert by_key[b"request-7"] == b'{"n": 7}'


class CountingRedis:
    """Redis, counting the calls that go alone and the flushes (one write of several
    commands, read back together) of the coalescer it is `counting`."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.pipelines = 0
        self.alone = 0

    def counting(self, coalescer: Any) -> Any:
        line = coalesce.KeptConnection(self.redis)

        async def counted(commands: Any) -> Any:
            self.pipelines += 1
            return await line.execute(commands)

        coalescer._line.execute = counted
        return coalescer

    async def script_load(self, script: str) -> Any:
        return await self.redis.script_load(script)

    async def evalsha(self, *args: Any) -> Any:
        self.alone += 1
        return await self.redis.evalsha(*args)


async def test_calls_made_while_a_flush_is_out_go_together_in_the_next(
    redis: Redis, prefix: str
) -> None:
    for script in (coalesce.CLAIM, coalesce.WRITE):  # whatever ran before: one pipeline each
        await redis.script_load(script)
    counting = CountingRedis(redis)
    batch = counting.counting(CoalescingRedis(counting, claim_ttl_ms=1000, max_batch=100))  # type: ignore[arg-type]
    keys = [f"{prefix}g:{i}" for i in range(350)]
    await asyncio.gather(*(batch.write(k, k.encode(), 60) for k in keys))
    assert counting.pipelines == 4  # 350 writes of one turn, at most 100 to a script call
    first = asyncio.ensure_future(batch.get(keys[0]))
    await asyncio.sleep(0)  # that turn's flush is out now; what follows waits for it
    later = [asyncio.ensure_future(batch.get(k)) for k in keys[1:]]
    for _ in range(3):  # several turns go by while the first flush is out
        await asyncio.sleep(0)
    assert await first == keys[0].encode()
    assert await asyncio.gather(*later) == [k.encode() for k in keys[1:]]
    assert counting.pipelines == 4 + 1 + 4  # the first alone, then 349 gets 100 at a time


ECHO_OR_FAIL = """
if ARGV[1] == 'fail' then return redis.error_reply('asked to fail') end
redis.call('INCR', KEYS[1])
return {KEYS[1], ARGV[1]}
"""


async def test_a_scripts_calls_of_one_turn_share_a_pipeline_and_keep_their_replies(
    redis: Redis, prefix: str
) -> None:
    counting = CountingRedis(redis)
    script = counting.counting(CoalescedScript(counting, ECHO_OR_FAIL + f"-- {prefix}"))  # type: ignore[arg-type]
    keys = [f"{prefix}n:{i}" for i in range(40)]
    calls = [script(keys=[k], args=[str(i)]) for i, k in enumerate(keys)]
    calls.append(script(keys=[keys[0]], args=["fail"]))
    replies = await asyncio.gather(*calls, return_exceptions=True)
    assert replies[:40] == [[k.encode(), str(i).encode()] for i, k in enumerate(keys)]
    assert isinstance(replies[40], Exception) and "asked to fail" in str(replies[40])
    # The first call went alone (answered NOSCRIPT: the script is new to Redis, so it was
    # loaded and the call made again); the 40 asked meanwhile went as one pipeline. None ran
    # twice: each counter is 1.
    assert (counting.alone, counting.pipelines) == (2, 1)
    assert [int(v) for v in await redis.mget(keys)] == [1] * 40
    assert await script(keys=[keys[1]], args=["x"]) == [keys[1].encode(), b"x"]
    assert (counting.alone, counting.pipelines) == (3, 1)  # a lone call needs no pipeline


async def test_a_pipeline_that_finds_the_script_lost_makes_its_calls_once_more(
    redis: Redis, prefix: str
) -> None:
    """As when Redis restarts while calls queue behind a lone one: the pipeline answers
    NOSCRIPT for each, the script is loaded, and every call is made once."""
    counting = CountingRedis(redis)
    script = counting.counting(CoalescedScript(counting, ECHO_OR_FAIL + f"-- again {prefix}"))  # type: ignore[arg-type]
    keys = [f"{prefix}b:{i}" for i in range(5)]
    futures = [asyncio.get_running_loop().create_future() for _ in keys]
    calls = [([k], [str(i)], f) for i, (k, f) in enumerate(zip(keys, futures, strict=True))]
    await script._execute(calls)
    assert [await f for f in futures] == [[k.encode(), str(i).encode()] for i, k in enumerate(keys)]
    assert counting.pipelines == 2
    assert [int(v) for v in await redis.mget(keys)] == [1] * 5


async def test_a_redis_that_never_answers_is_a_redis_timeout_for_every_caller() -> None:
    """Our bound on a flush is reported as Redis's own TimeoutError (a RedisError), which
    HTTP maps to 503 and a consumer retries, never as a bare TimeoutError (a 500)."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads until the client gives up; answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = Redis(host="127.0.0.1", port=port, protocol=2, socket_timeout=None)
    try:
        batch = CoalescingRedis(hung, timeout_s=0.3)
        script = CoalescedScript(hung, ECHO_OR_FAIL, timeout_s=0.3)
        outcomes = await asyncio.gather(
            batch.get("k"),
            batch.create("k", b"v", 60),
            script(keys=["k"], args=["1"]),  # goes alone
            script(keys=["k"], args=["2"]),  # queued behind it, then a pipeline
            return_exceptions=True,
        )
        for outcome in outcomes:
            assert isinstance(outcome, RedisTimeoutError), outcome
    finally:
        await hung.aclose()
        server.close()


async def test_a_kept_connection_that_was_killed_is_replaced_for_the_next_flush(
    redis: Redis, prefix: str
) -> None:
    batch = CoalescingRedis(redis)
    await batch.write(f"{prefix}k", b"v", 60)
    # Every other normal client goes, the coalescer's kept connection among them (as when
    # Redis restarts). The flush that finds it gone fails as Redis failing (a RedisError:
    # HTTP answers 503, a delivery is tried again); the next one has a new connection.
    killed = await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 1
    with pytest.raises(RedisConnectionError):
        await batch.get(f"{prefix}k")
    assert await batch.get(f"{prefix}k") == b"v"


SLOW = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
  local now = redis.call('TIME')
until now[1] * 1000000 + now[2] - start > 300000
return 'slow'
"""


async def test_a_flush_cut_short_never_leaves_its_replies_to_the_next_one(redis: Redis) -> None:
    line = coalesce.KeptConnection(redis)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await line.execute([("EVAL", SLOW, 0), ("ECHO", "first")])
    # The replies of the flush given up on may still come; the next flush must read its own.
    assert await line.execute([("ECHO", "second"), ("ECHO", "third")]) == [b"second", b"third"]
