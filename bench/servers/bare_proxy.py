"""The floor for a Python gateway: a reverse proxy that forwards the body and returns the
upstream's answer, with nothing else (no parsing, no policy, no log).

    python bench/servers/bare_proxy.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import httpx
import uvicorn

UPSTREAM = sys.argv[2].rstrip("/")
client: httpx.AsyncClient | None = None


async def app(scope, receive, send):  # noqa: ANN001, ANN201
    global client
    if scope["type"] != "http":
        return
    if client is None:
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256), timeout=60)
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    response = await client.request(scope["method"], UPSTREAM + scope["path"], content=body,
                                    headers={"content-type": "application/json"})
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": response.content})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False)
