"""A minimal OpenAI-compatible upstream answering every chat completion with a fixed answer.

    python bench/servers/fixed_upstream.py PORT

A raw ASGI app under uvicorn: as little work per request as a server can do, so that what
the gateway benchmark measures is the proxies' overhead, not the upstream.
"""

from __future__ import annotations

import json
import sys

import uvicorn

ANSWER = json.dumps({
    "id": "chatcmpl-fixed", "object": "chat.completion", "created": 0, "model": "fixed",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "pong"},
                 "logprobs": {"content": [{"token": "pong", "logprob": -0.05,
                                           "top_logprobs": [{"token": "pong",
                                                             "logprob": -0.05}]}]}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
}).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope, receive, send):  # noqa: ANN001, ANN201
    if scope["type"] != "http":
        return
    more = True
    while more:  # read (and drop) the body
        message = await receive()
        more = message.get("more_body", False)
    if scope["path"].endswith("/models"):
        body = b'{"object": "list", "data": [{"id": "fixed", "object": "model"}]}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False)
