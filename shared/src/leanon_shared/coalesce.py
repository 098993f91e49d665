"""What many concurrent tasks ask of Redis and Kafka at about the same moment goes as one batch.

A batch of records starts hundreds of deliveries at once in notification, and each reads a
contact, claims its delivery and, later, writes a sent key, and publishes a report; intake's
concurrent HTTP requests each read or create a status and publish a command. One round trip
per command would cost more than the work itself, and so did one redis-py command per call
inside a shared pipeline (packing and parsing each was a fifth of a worker's CPU). So each
kind of command is gathered into ONE command over every key asked for (an MGET, one script
call for all claims, one for all writes, one for all creations), records into one Kafka batch
per partition, and one flush of each is out at a time (see GroupCommit), while each caller
still reads as a plain `await`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, TypeAlias

from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from leanon_shared.kafka import EventBus

# KEYS = sent key, claim key, for each delivery; ARGV[1] = the claim's TTL (ms). For each: the
# sent key's value when there is one ('done', or the report of a delivery not yet reported),
# else 'ok' (claimed now) or 'busy' (another consumer is attempting it).
CLAIM = """
local out = {}
for i = 1, #KEYS, 2 do
  local sent = redis.call('GET', KEYS[i])
  if sent then
    out[#out + 1] = sent
  elseif redis.call('SET', KEYS[i + 1], '1', 'NX', 'PX', ARGV[1]) then
    out[#out + 1] = 'ok'
  else
    out[#out + 1] = 'busy'
  end
end
return out
"""
# KEYS = the keys to write; ARGV = value, TTL (s), for each key.
WRITE = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'EX', ARGV[2 * i])
end
return #KEYS
"""
# KEYS = the keys to create; ARGV = value, TTL (s), for each key. For each: 1 when it was
# created now, 0 when the key was there already (the first write wins).
CREATE = """
local out = {}
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'NX', 'EX', ARGV[2 * i]) then
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
_Waiter: TypeAlias = "asyncio.Future[Any] | _Slot | None"  # _Slot: see below
Headers = Sequence[tuple[str, bytes]]
Pending = tuple[bytes, bytes | None, Headers, asyncio.Future[None]]


class GroupCommit:
    """Flushing, as a group commit: what is asked in one loop turn goes together, and while a
    flush is out, what is asked meanwhile waits for it to come back and then goes as the next
    one. So batches grow with the load (a flush per turn made hundreds of tiny pipelines a
    second under load, each with its own connection checkout, timer and write) while an idle
    service waits only for its own turn's flush."""

    def __init__(self) -> None:
        self._scheduled = False
        self._flying = False

    def _queued(self) -> None:
        if not (self._scheduled or self._flying):
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._scheduled = False
        if self._flying:
            return
        flush = self._take()
        if flush is not None:
            self._flying = True
            asyncio.ensure_future(flush).add_done_callback(self._landed)

    def _landed(self, task: asyncio.Future[None]) -> None:
        self._flying = False
        _quiet(task)
        self._flush_now()

    def _take(self) -> Coroutine[Any, Any, None] | None:
        """The next flush, taking what is pending; None when nothing is."""
        raise NotImplementedError


Command = tuple[Any, ...]


class KeptConnection:
    """One Redis connection kept for a coalescer's flushes, which go one at a time: a flush's
    commands go out in one write and their replies are read straight off the connection.
    redis-py's Pipeline spent ~240 µs of CPU per flush here on its machinery (a command stack,
    a connection checkout, a retry wrapper, per-command response hooks, a reset); this spends
    ~70 µs on the same MGET and script call. Connecting, AUTH, SELECT, TLS, health checks,
    reconnecting and retrying a flush that met a broken connection are still redis-py's, on
    a connection of the client's own pool: retried as redis-py retries a pipeline."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._conn: AbstractConnection | None = None

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Each command's reply, or the ResponseError it met (NoScriptError, say), in order."""
        pool = self._redis.connection_pool
        conn = self._conn
        if conn is None:
            conn = self._conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            return list(
                await conn.retry.call_with_retry(
                    lambda: self._round_trip(conn, commands), lambda _: conn.disconnect()
                )
            )
        except BaseException:
            # Cancelled or failed mid-flush: replies may still come, so never reuse it. Handed
            # back to the pool even if cancelled again meanwhile (a lost one is never freed).
            self._conn = None
            await asyncio.shield(_drop(pool, conn))
            raise

    @staticmethod
    async def _round_trip(conn: AbstractConnection, commands: Sequence[Command]) -> list[Any]:
        await conn.send_packed_command(conn.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:  # this command's own error; the rest still come
                replies.append(exc)
        return replies


async def _drop(pool: Any, conn: AbstractConnection) -> None:
    await conn.disconnect(nowait=True)
    await pool.release(conn)


class CoalescingRedis(GroupCommit):
    """Reads, claims, writes, creates and deletes keys: each call waits for its own reply, and
    the calls of one flush share one pipeline of at most five commands.

    The scripts are called by `evalsha` without asking SCRIPT EXISTS first: when Redis has lost
    them (a restart), they are loaded again and that turn's script calls are made once more
    (a script that answered NOSCRIPT never ran)."""

    def __init__(
        self,
        redis: Redis,
        claim_ttl_ms: int = 60_000,
        max_batch: int = 2000,
        timeout_s: float = 10.0,
    ) -> None:
        super().__init__()
        self._r = redis
        self._claim_ttl_ms = claim_ttl_ms
        self._timeout_s = timeout_s  # for the whole pipeline: `redis` may have no read timeout
        self._max = max_batch
        self._claim_sha = _sha(CLAIM)
        self._write_sha = _sha(WRITE)
        self._create_sha = _sha(CREATE)
        self._batch = _Batch()
        self._line = KeptConnection(redis)

    async def get(self, key: str) -> bytes | None:
        future = self._future()
        self._batch.gets.append((key, future))
        self._queued()
        return await future  # type: ignore[no-any-return]

    async def claim(self, sent_key: str, claim_key: str) -> bytes:
        future = self._future()
        self._batch.claims.append((sent_key, claim_key, future))
        self._queued()
        return await future  # type: ignore[no-any-return]

    async def read_and_claim(
        self, key: str, sent_key: str, claim_key: str
    ) -> tuple[bytes | None, bytes]:
        """`get(key)` and `claim(sent_key, claim_key)` in the same flush, so one wait for both."""
        return (await self.read_and_claim_many([(key, sent_key, claim_key)]))[0]

    async def read_and_claim_many(
        self, items: Sequence[tuple[str, str, str]]
    ) -> list[tuple[bytes | None, bytes]]:
        """`read_and_claim` for each (key, sent key, claim key), in the same flush, with one
        wait for them all (a fetched batch of deliveries: no future or wake-up each)."""
        if not items:
            return []
        group = _Group(self._future(), 2 * len(items))
        for n, (key, sent_key, claim_key) in enumerate(items):
            self._batch.gets.append((key, _Slot(group, 2 * n)))
            self._batch.claims.append((sent_key, claim_key, _Slot(group, 2 * n + 1)))
        self._queued()
        flat = await group.future
        return list(zip(flat[0::2], flat[1::2], strict=True))

    async def write(self, key: str, value: bytes, ttl_s: int) -> None:
        future = self._future()
        self._batch.writes.append((key, value, ttl_s, future))
        self._queued()
        await future

    async def create(self, key: str, value: bytes, ttl_s: int) -> bool:
        """SET NX EX: True when this call created the key, False when it was there."""
        return (await self.create_many([(key, value, ttl_s)]))[0]

    async def create_many(self, items: Sequence[tuple[str, bytes, int]]) -> list[bool]:
        """Several `create`s in the same flush, without a task each."""
        futures = []
        for key, value, ttl_s in items:
            futures.append(future := self._future())
            self._batch.creates.append((key, value, ttl_s, future))
        if not futures:
            return []
        self._queued()
        return [bool(created) for created in await asyncio.gather(*futures)]

    def write_soon(self, key: str, value: bytes, ttl_s: int) -> None:
        """Write and wait for nothing: for a write whose loss costs only a little repeated
        work (it is never retried)."""
        self._batch.writes.append((key, value, ttl_s, None))
        self._queued()

    async def delete(self, key: str) -> None:
        future = self._future()
        self._batch.deletes.append((key, future))
        self._queued()
        await future

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def _take(self) -> Coroutine[Any, Any, None] | None:
        if not self._batch.size:
            return None
        batch, self._batch = self._batch.split(self._max)
        return self._execute(batch)

    async def _execute(self, batch: _Batch) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                replies = await self._pipeline(batch)
                if any(isinstance(r, NoScriptError) for r in replies):
                    for script in (CLAIM, WRITE, CREATE):
                        await self._r.script_load(script)
                    replies = await self._pipeline(batch)
        except Exception as exc:
            batch.fail(_as_redis_error(exc, self._timeout_s))
            return
        batch.settle(replies)

    async def _pipeline(self, batch: _Batch) -> list[Any]:
        commands: list[Command] = []
        if batch.gets:
            commands.append(("MGET", *[key for key, _ in batch.gets]))
        if batch.claims:
            keys = [k for sent, claim, _ in batch.claims for k in (sent, claim)]
            commands.append(("EVALSHA", self._claim_sha, len(keys), *keys, self._claim_ttl_ms))
        if batch.writes:
            args: list[str | bytes | int] = [key for key, _, _, _ in batch.writes]
            args += [a for _, value, ttl, _ in batch.writes for a in (value, ttl)]
            commands.append(("EVALSHA", self._write_sha, len(batch.writes), *args))
        if batch.creates:
            args = [key for key, _, _, _ in batch.creates]
            args += [a for _, value, ttl, _ in batch.creates for a in (value, ttl)]
            commands.append(("EVALSHA", self._create_sha, len(batch.creates), *args))
        if batch.deletes:
            commands.append(("DEL", *[key for key, _ in batch.deletes]))
        return await self._line.execute(commands)


class CoalescedScript(GroupCommit):
    """One Lua script, called by many tasks at about the same moment: a call made when none
    is out goes at once; the calls made while one is out go together next, as one pipeline of
    EVALSHA (one connection checkout, one write, one wait), each caller still getting its own
    reply or its own error. A NOSCRIPT reply (Redis lost its scripts) means that call never
    ran: the script is loaded again and only those calls are made again.
    """

    def __init__(
        self, redis: Redis, source: str, max_batch: int = 500, timeout_s: float = 10.0
    ) -> None:
        super().__init__()
        self._r = redis
        self._source = source
        self._sha = _sha(source)
        self._max = max_batch
        self._timeout_s = timeout_s
        self._pending: list[tuple[Sequence[Any], Sequence[Any], asyncio.Future[Any]]] = []
        self._line = KeptConnection(redis)

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        if not (self._flying or self._scheduled or self._pending):
            # Nothing else asked: this call goes at once, on its own (a lone call pays no
            # pipeline or extra turn of the loop), and what is asked meanwhile goes next.
            self._flying = True
            try:
                return await self._alone(keys, args)
            finally:
                self._flying = False
                self._flush_now()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((keys, args, future))
        self._queued()
        return await future

    async def _alone(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    return await self._r.evalsha(self._sha, len(keys), *keys, *args)
                except NoScriptError:  # that call never ran
                    await self._r.script_load(self._source)
                    return await self._r.evalsha(self._sha, len(keys), *keys, *args)
        except TimeoutError as exc:
            raise _as_redis_error(exc, self._timeout_s) from exc

    def _take(self) -> Coroutine[Any, Any, None] | None:
        if not self._pending:
            return None
        batch, self._pending = self._pending[: self._max], self._pending[self._max :]
        return self._execute(batch)

    async def _execute(
        self, batch: list[tuple[Sequence[Any], Sequence[Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                replies = await self._pipeline(batch)
                lost = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if lost:
                    await self._r.script_load(self._source)
                    again = await self._pipeline([batch[n] for n in lost])
                    for n, reply in zip(lost, again, strict=True):
                        replies[n] = reply
        except Exception as exc:
            _fail([future for *_, future in batch], _as_redis_error(exc, self._timeout_s))
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(
        self, batch: list[tuple[Sequence[Any], Sequence[Any], asyncio.Future[Any]]]
    ) -> list[Any]:
        return await self._line.execute(
            [("EVALSHA", self._sha, len(keys), *keys, *args) for keys, args, _ in batch]
        )


class _Group:
    """Replies for many calls, gathered for one waiter: `future` gets them all, in order, once
    every `_Slot` has its own (or the first error)."""

    __slots__ = ("future", "missing", "replies")

    def __init__(self, future: asyncio.Future[Any], size: int) -> None:
        self.future = future
        self.replies: list[Any] = [None] * size
        self.missing = size


class _Slot:
    """One call's place in a `_Group`: settled like a future (done, set_result, set_exception)."""

    __slots__ = ("group", "index")

    def __init__(self, group: _Group, index: int) -> None:
        self.group = group
        self.index = index

    def done(self) -> bool:
        return self.group.future.done()

    def set_result(self, reply: Any) -> None:
        group = self.group
        group.replies[self.index] = reply
        group.missing -= 1
        if not group.missing:
            group.future.set_result(group.replies)

    def set_exception(self, exc: BaseException) -> None:
        self.group.future.set_exception(exc)


class _Batch:
    """The calls of one flush, by kind, each with the future its caller waits on."""

    def __init__(self) -> None:
        self.gets: list[tuple[str, _Waiter]] = []
        self.claims: list[tuple[str, str, _Waiter]] = []
        self.writes: list[tuple[str, bytes, int, _Waiter]] = []
        self.creates: list[tuple[str, bytes, int, _Waiter]] = []
        self.deletes: list[tuple[str, _Waiter]] = []

    @property
    def size(self) -> int:
        return sum(len(getattr(self, kind)) for kind in self.KINDS)

    KINDS = ("gets", "claims", "writes", "creates", "deletes")  # in pipeline order

    def split(self, most: int) -> tuple[_Batch, _Batch]:
        """At most `most` calls of each kind, and the rest (bounding a script's keys)."""
        now, rest = _Batch(), _Batch()
        for kind in self.KINDS:
            calls = getattr(self, kind)
            setattr(now, kind, calls[:most])
            setattr(rest, kind, calls[most:])
        return now, rest

    def _groups(self) -> list[list[_Waiter]]:
        """Each command's waiters, in the order the commands went into the pipeline."""
        groups = [
            [f for _, f in self.gets],
            [f for _, _, f in self.claims],
            [f for *_, f in self.writes],
            [f for *_, f in self.creates],
            [f for _, f in self.deletes],
        ]
        return [g for g in groups if g]

    def fail(self, exc: BaseException) -> None:
        for group in self._groups():
            _fail(group, exc)

    def settle(self, replies: list[Any]) -> None:
        for group, reply in zip(self._groups(), replies, strict=True):
            if isinstance(reply, Exception):
                _fail(group, reply)
            elif isinstance(reply, list):  # MGET, the claims and creations: one answer each
                for future, one in zip(group, reply, strict=True):
                    if future is not None and not future.done():
                        future.set_result(one)
            else:  # the writes and deletes: done together
                for future in group:
                    if future is not None and not future.done():
                        future.set_result(None)


def _fail(group: list[_Waiter], exc: BaseException) -> None:
    for future in group:
        if future is not None and not future.done():
            future.set_exception(exc)


def _as_redis_error(exc: Exception, timeout_s: float) -> Exception:
    """What a caller of Redis expects: our bound on a flush running out is Redis not
    answering in time (a RedisError: HTTP answers 503, a batch is retried), not a bare
    TimeoutError."""
    if isinstance(exc, TimeoutError) and not isinstance(exc, RedisError):
        error = RedisTimeout(f"Redis did not answer within {timeout_s:g} s")
        error.__cause__ = exc
        return error
    return exc


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # how Redis names a script


class CoalescingPublisher(GroupCommit):
    """Publishes records to one topic; the records of one flush go as one batch per
    partition (aiokafka's `send` cost more per record than building the report) and share one
    acknowledgement wait (see `send_batches`). Each caller returns only once Kafka has its
    record; a report lands beside the other events of its request."""

    def __init__(self, bus: EventBus, topic: str) -> None:
        self._bus = bus
        self._topic = topic
        super().__init__()
        self._pending: list[Pending] = []

    async def __call__(self, value: bytes, key: bytes | None, headers: Headers) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((value, key, headers, future))
        self._queued()
        await future

    def _take(self) -> Coroutine[Any, Any, None] | None:
        if not self._pending:
            return None
        batch, self._pending = self._pending, []
        return self._publish(batch)

    async def _publish(self, batch: list[Pending]) -> None:
        try:
            await send_batches(self._bus, self._topic, ((v, k, h) for v, k, h, _ in batch))
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for *_, future in batch:
            if not future.done():
                future.set_result(None)


async def send_batches(
    bus: EventBus, topic: str, records: Iterable[tuple[bytes, bytes | None, Headers]]
) -> None:
    """Send records (value, key, headers) as one Kafka batch per partition and wait until
    Kafka has them all. Keys go to the partition aiokafka's default partitioner would choose,
    so a record lands beside the others with its key."""
    kafka = bus.kafka
    partitions = sorted(await kafka.partitions_for(topic))
    builders: dict[int, BatchBuilder] = {}
    sends = []
    for value, key, headers in records:
        if key is None:  # as aiokafka's partitioner does
            partition = random.choice(partitions)
        else:
            partition = partitions[_hash(key) % len(partitions)]
        builder = builders.get(partition)
        if builder is None:
            builder = builders[partition] = kafka.create_batch()
        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            sends.append(await kafka.send_batch(builder, topic, partition=partition))
            builder = builders[partition] = kafka.create_batch()
            builder.append(timestamp=None, key=key, value=value, headers=headers)
    for partition, builder in builders.items():
        sends.append(await kafka.send_batch(builder, topic, partition=partition))
    await asyncio.gather(*sends)


@functools.lru_cache(maxsize=65536)
def _hash(key: bytes) -> int:
    """What aiokafka's DefaultPartitioner hashes a key to (its murmur2 is pure Python, ~10 µs
    for a UUID, and a request's events share a key)."""
    return int(murmur2(key)) & 0x7FFFFFFF


def _quiet(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # errors went to every waiting future already
