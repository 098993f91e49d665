"""The floor for the intake benchmark: the least any intake must do to accept a submission, on
LeanOn's own stack (uvicorn, uvloop, httptools, aiokafka, redis-py, the same batching).

Per POST it parses the JSON body, gives it an id, publishes it to Kafka (acks=all, idempotent,
waiting for the acknowledgement, so an accepted request is never lost) and creates its status
in Redis (SET NX EX), then answers 202. No auth, validation, rate limit, idempotency or
fingerprint: whatever LeanOn does beyond this is LeanOn's own cost, and whatever this cannot
do at some rate, no intake built on this stack can do on this machine.

    python bench/minimal_intake.py PORT [WORKERS]   # LEANON_* settings as the services
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from leanon_shared.coalesce import CoalescingPublisher, CoalescingRedis
from leanon_shared.kafka import EventBus, ensure_topics
from leanon_shared.runtime import redis_client, serve
from leanon_shared.settings import LeanOnSettings
from leanon_shared.topics import Topics

STATUS = b'{"status":"pending"}'
STATUS_TTL_S = 3600


class MinimalIntake:
    def __init__(self, settings: LeanOnSettings) -> None:
        self.settings = settings
        self.topic = f"{settings.topic_prefix}minimal.requests"
        self.bus = EventBus(settings, "bench-minimal-intake")
        self.publish: CoalescingPublisher | None = None
        self.statuses: CoalescingRedis | None = None

    async def start(self) -> None:
        layout = {self.topic: (self.settings.topic_partitions, {})}
        await ensure_topics(self.settings, Topics(self.settings.topic_prefix), layout)
        await self.bus.start()
        self.publish = CoalescingPublisher(self.bus, self.topic)
        self.statuses = CoalescingRedis(redis_client(self.settings.redis_url, socket_timeout=None))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        if scope["method"] != "POST":  # readiness
            await answer(send, 200, b'{"ready":true}')
            return
        assert self.publish is not None and self.statuses is not None
        body: dict[str, Any] = orjson.loads(b"".join(chunks))
        request_id = body["id"] = str(uuid.uuid4())
        await self.publish(orjson.dumps(body), request_id.encode(), [])
        key = f"{self.settings.topic_prefix}minimal:status:{request_id}"
        await self.statuses.create(key, STATUS, STATUS_TTL_S)
        url = f"/v1/requests/{request_id}"
        reply = {"id": request_id, "status": "pending", "status_url": url}
        await answer(send, 202, orjson.dumps(reply))

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
            elif message["type"] == "lifespan.shutdown":
                await self.bus.stop()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return


async def answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def make() -> MinimalIntake:
    """Each worker process's app (with WORKERS > 1, uvicorn forks and imports this)."""
    return MinimalIntake(LeanOnSettings())


if __name__ == "__main__":
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    serve(make(), "127.0.0.1", int(sys.argv[1]), workers=workers, factory="minimal_intake:make")
