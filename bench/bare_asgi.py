"""The raw baseline for the intake benchmark: a bare ASGI endpoint on LeanOn's server stack
(uvicorn, uvloop, httptools, the same settings) that reads the body and answers 202."""

from __future__ import annotations

import sys

from starlette.types import Receive, Scope, Send

from leanon_shared.runtime import serve

BODY = b'{"id":"bare","status":"pending","status_url":"/v1/requests/bare"}'


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 202,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(BODY)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    serve(app, "127.0.0.1", int(sys.argv[1]))
