"""ASGI middleware of the gateway: limits enforced before anything parses a request."""

from __future__ import annotations

from llmtriage.serving.schemas import error


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with a 413, whether they announce their length or
    arrive chunked, before anything parses them (pure ASGI: no per-request task)."""

    def __init__(self, app, limit: int, on_refused=None) -> None:  # noqa: ANN001
        self.app, self.limit, self.on_refused = app, limit, on_refused

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        body, more = b"", True
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            more = False
            body = None
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                body = None
                break
        if body is None:
            if self.on_refused is not None:
                self.on_refused()
            await error(413, f"request body over {self.limit} bytes")(scope, receive, send)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
