"""The floor for a Python gateway: a reverse proxy that forwards the body and returns the
upstream's answer, with nothing else (no parsing, no policy, no log), on the same HTTP
pieces as the gateway (uvicorn with httptools and uvloop; an aiohttp client).

    python bench/servers/bare_proxy.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
import uvicorn

UPSTREAM = sys.argv[2].rstrip("/")
client: aiohttp.ClientSession | None = None


async def app(scope, receive, send):  # noqa: ANN001, ANN201
    global client
    if scope["type"] != "http":
        return
    if client is None:
        client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                       timeout=aiohttp.ClientTimeout(total=60))
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    async with client.request(scope["method"], UPSTREAM + scope["path"], data=body,
                              headers={"content-type": "application/json"}) as response:
        content = await response.read()
    await send({"type": "http.response.start", "status": response.status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": content})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False, http="httptools")
