"""The gateway's ASGI entry, in front of the FastAPI app: limits enforced before anything
parses a request, and the completion endpoints answered without FastAPI's layers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from llmtriage.serving.schemas import error

#: An endpoint the ingress calls itself: it reads its own body from the request.
Direct = Callable[[Request], Awaitable[Response]]


class Ingress:
    """Refuse bodies over ``limit`` bytes with a 413, whether they announce their length or
    arrive chunked, before anything parses them; then hand a POST to a path of ``direct``
    straight to its endpoint, everything else to the app.

    Pure ASGI (no per-request task). The direct endpoints are the app's own route
    functions, declared to FastAPI as usual (its OpenAPI document lists them); the ingress
    skips FastAPI's middleware (error pages, telemetry, its own body limit), routing and
    dependency machinery (a tenth of a passed-through request's CPU, measured). An endpoint
    that raises gets ``crashed``'s response, as the app's own 500 handler would give it.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int,
                 direct: dict[str, Direct], crashed: Callable[[Exception], Response],
                 on_refused: Callable[[], None] | None = None) -> None:
        self.app, self.limit, self.on_refused = app, limit, on_refused
        self.direct, self.crashed = direct, crashed

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        body: bytes | None = b""
        more = True
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            more, body = False, None
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

        endpoint = self.direct.get(scope["path"])
        if endpoint is None:
            await self.app(scope, replay, send)
            return
        try:
            response = await endpoint(Request(scope, replay))
        except Exception as exc:  # noqa: BLE001 - the client still gets an answer
            response = self.crashed(exc)
        await response(scope, replay, send)
