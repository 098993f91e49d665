"""The webhook client's keep-alive connections against a real local server that answers byte by
byte from a script: reuse, Connection: close, chunked answers, 100 Continue, silence, hang-ups
and garbage, and the per-origin connection limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from leanon_notification.signing import HEADER, verify
from leanon_notification.webhooks import WebhookSender
from tests.conftest import free_port, wait_for

SECRET = b"connections-test-secret-0123456"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


@dataclass
class Server:
    """Answers the n-th request from `answers[n]` (bytes to write, or "silent" or "hang up"),
    then 204. Records each request's connection number and whether its signature verified."""

    url: str
    answers: list[bytes | str] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[tuple[int, bool]] = field(default_factory=list)
    hold: float = 0.0  # seconds before each answer

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                fields = (x.partition(":") for x in head.decode().split("\r\n")[1:])
                headers = {k.lower(): v.strip() for k, _, v in fields}
                body = await reader.readexactly(int(headers["content-length"]))
                self.requests.append((number, verify(body, headers[HEADER.lower()], SECRET)))
                n = len(self.requests)
                answer = self.answers[n - 1] if n <= len(self.answers) else NO_CONTENT
                await asyncio.sleep(self.hold)
                if answer == "silent":
                    await asyncio.Event().wait()  # never answers; the client gives up
                if answer == "hang up":
                    return
                assert isinstance(answer, bytes)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.open_now -= 1
            writer.close()


@contextlib.asynccontextmanager
async def server(*answers: bytes | str, hold: float = 0.0) -> AsyncIterator[Server]:
    port = free_port()
    srv = Server(f"http://127.0.0.1:{port}", list(answers), hold=hold)
    listener = await asyncio.start_server(srv.serve, "127.0.0.1", port)
    try:
        yield srv
    finally:
        listener.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(listener.wait_closed(), 1)


@contextlib.asynccontextmanager
async def sender(timeout_s: float = 2.0, per_host: int = 500) -> AsyncIterator[WebhookSender]:
    client = WebhookSender(SECRET, frozenset({"127.0.0.1"}), timeout_s, per_host)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def test_posts_reuse_one_connection_and_are_signed() -> None:
    async with server() as srv, sender() as client:
        for _ in range(3):
            assert (await client.send(f"{srv.url}/a?x=1", b'{"id":"1"}')).delivered
    assert srv.requests == [(1, True), (1, True), (1, True)]


async def test_connection_close_opens_a_new_connection_for_the_next_post() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with server(closing) as srv, sender() as client:
        assert (await client.send(f"{srv.url}/a", b"{}")).delivered
        assert (await client.send(f"{srv.url}/a", b"{}")).delivered
    assert [n for n, _ in srv.requests] == [1, 2]


async def test_a_chunked_503_with_retry_after_is_read_whole_and_the_connection_kept() -> None:
    chunked = (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n5\r\nbusy!\r\n0\r\n\r\n"
    )
    continued = b"HTTP/1.1 100 Continue\r\n\r\n" + NO_CONTENT
    async with server(chunked, continued) as srv, sender() as client:
        first = await client.send(f"{srv.url}/a", b"{}")
        second = await client.send(f"{srv.url}/a", b"{}")
    assert (first.retryable, first.status, first.retry_after_s) == (True, 503, 7.0)
    assert second.delivered and second.status == 204
    assert [n for n, _ in srv.requests] == [1, 1]


async def test_410_is_permanent() -> None:
    async with server(b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n") as srv, sender() as c:
        outcome = await c.send(f"{srv.url}/a", b"{}")
    assert outcome.permanent and outcome.status == 410


async def test_silence_times_out_and_that_connection_is_never_reused() -> None:
    async with server("silent") as srv, sender(timeout_s=0.3) as client:
        timed_out = await client.send(f"{srv.url}/a", b"{}")
        after = await client.send(f"{srv.url}/a", b"{}")
    assert timed_out.retryable and timed_out.detail == "TimeoutError"
    assert after.delivered
    assert [n for n, _ in srv.requests] == [1, 2]


@pytest.mark.parametrize(
    ("answer", "detail"), [("hang up", "Disconnected"), (b"SMTP ready\r\n\r\n", "BadAnswer")]
)
async def test_a_hang_up_or_garbage_is_retryable(answer: bytes | str, detail: str) -> None:
    async with server(answer) as srv, sender() as client:
        outcome = await client.send(f"{srv.url}/a", b"{}")
        assert (await client.send(f"{srv.url}/a", b"{}")).delivered
    assert outcome.retryable and outcome.detail == detail


async def test_connection_refused_is_retryable() -> None:
    async with sender() as client:
        outcome = await client.send(f"http://127.0.0.1:{free_port()}/a", b"{}")
    assert outcome.retryable and outcome.detail == "ConnectionRefusedError"


async def test_a_burst_holds_at_most_its_share_and_a_short_queue() -> None:
    async with server(hold=0.02) as srv, sender(per_host=3) as client:
        # per_host 3: three posts at once and one (3 // 2) queued for a slot; the rest are told
        # "busy" at once (retried later by the caller)
        outcomes = await asyncio.gather(*(client.send(f"{srv.url}/a", b"{}") for _ in range(10)))
        again = await asyncio.gather(*(client.send(f"{srv.url}/a", b"{}") for _ in range(3)))
    assert sum(o.delivered for o in outcomes) == 4
    assert {o.detail for o in outcomes if not o.delivered} == {"host busy"}
    # the host answers: those turned away were never sent, and cost their delivery no attempt
    assert not any(o.attempted for o in outcomes if not o.delivered)
    assert all(o.delivered for o in again)
    assert srv.most_open <= 3 and srv.connections <= 3


async def test_an_answering_host_queues_a_few_past_its_share_and_turns_the_rest_away() -> None:
    async with server(hold=0.05) as srv, sender(per_host=4) as client:
        assert (await client.send(f"{srv.url}/a", b"{}")).delivered  # it answers
        burst = await asyncio.gather(*(client.send(f"{srv.url}/a", b"{}") for _ in range(8)))
    # 4 posting, 2 (per_host // 2) queued for a slot, 2 told "busy"
    assert sum(o.delivered for o in burst) == 6
    assert [o.detail for o in burst if not o.delivered] == ["host busy"] * 2
    assert [o.attempted for o in burst if not o.delivered] == [False] * 2
    assert srv.most_open <= 4


async def test_a_host_that_stops_answering_turns_the_queue_away_in_time() -> None:
    async with server("silent", "silent", hold=0.0) as srv, sender(timeout_s=2, per_host=2) as c:
        srv.answers.insert(0, NO_CONTENT)
        assert (await c.send(f"{srv.url}/a", b"{}")).delivered
        started = asyncio.get_running_loop().time()
        stalled = [asyncio.ensure_future(c.send(f"{srv.url}/a", b"{}")) for _ in range(2)]
        await wait_for(
            lambda: len(srv.requests) >= 3, timeout=5, what="both stalled posts to arrive"
        )
        queued = await c.send(f"{srv.url}/a", b"{}")  # queues: the host answered just now
        waited = asyncio.get_running_loop().time() - started
        later = await c.send(f"{srv.url}/a", b"{}")  # no answer for a while now: at once
        assert [o.retryable for o in await asyncio.gather(*stalled)] == [True, True]
    assert queued.detail == "host busy" and 0.4 < waited < 1.5
    assert later.detail == "host busy"
    # a host that has stopped answering is a failed attempt: the delivery backs off
    assert queued.attempted and queued.retryable and later.attempted and later.retryable
