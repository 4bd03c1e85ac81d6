"""The OpenAI-compatible gateway: any policy (or plain model) behind /v1/chat/completions.

The ``model`` field names a policy (a cascade, a router) or a model of the catalog (passed
through). The policy runs through the same step loop as in ``bench``; every response says
which model answered and why, in a ``triage`` extension field and in ``x-triage-*`` headers.
This module is the HTTP layer only: the request path is :mod:`llmtriage.serving.requests`,
the response shapes and streams :mod:`llmtriage.serving.streaming`.

Streaming: by default the accepted answer is streamed once the policy has accepted it (a
cascade must finish judging first, so the time to the first token is the whole cascade's
latency); ``stream = "first"`` streams the first model's answer as it is generated (see
the streaming module).

Every request gets an answer or an OpenAI-style error (401, 404, 413, 429 with Retry-After
for the gateway's limits and for upstreams that rate-limit, 400, 502/503 from upstreams,
500), and is counted in ``/metrics`` and written to the request log.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmtriage.backends.pool import ModelPool
from llmtriage.policies.base import Policy
from llmtriage.serving.config import ClientKey, GatewaySettings
from llmtriage.serving.guard import Refused
from llmtriage.serving.middleware import BodyLimit
from llmtriage.serving.requests import Failure, Job, RequestPath
from llmtriage.serving.schemas import ChatBody, CompletionBody, FeedbackBody, error
from llmtriage.serving.streaming import Shape, first_stream


def create_app(pool: ModelPool, policies: dict[str, Policy],
               settings: GatewaySettings | None = None,
               keys: list[ClientKey] | None = None) -> FastAPI:
    """The gateway over a pool of models and the named policies (each scores answers with
    the signal it holds)."""
    settings = settings or GatewaySettings(request_log=None)
    path = RequestPath(pool, policies, settings, keys or [])

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield  # uvicorn has finished the in-flight requests when this resumes
        await path.aclose()

    app = FastAPI(title="Triage gateway", version="0.3.0", lifespan=lifespan)

    def respond(failure: Failure) -> JSONResponse:
        return error(failure.status, failure.message, failure.kind, failure.code,
                     failure.retry_after)

    def refusal(exc: Refused) -> JSONResponse:
        return error(exc.status, str(exc), exc.kind, exc.code, exc.retry_after)

    def client_of(request: Request) -> ClientKey | None:
        """The calling key (None with no keys configured); raises Refused."""
        return path.ring.identify(request.headers.get("authorization"))

    async def serve(request: Request, body: ChatBody | CompletionBody,
                    messages: list[dict[str, str]], chat: bool) -> Response:
        max_tokens = (getattr(body, "max_completion_tokens", None) or body.max_tokens
                      or settings.max_tokens)
        job = Job(ident=f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
                  policy_name=body.model, messages=messages, max_tokens=max_tokens,
                  temperature=body.temperature, client=None,
                  session=request.headers.get("x-triage-session") or None)
        try:
            job.client = client_of(request)
            if not path.knows(body.model):
                raise Refused(404, f"no policy or model {body.model!r}; GET /v1/models lists "
                                   "them", "not_found_error", "model_not_found")
            if not any(m["role"] == "user" for m in messages):
                raise Refused(400, "invalid request: messages need at least one user turn",
                              "invalid_request_error", "invalid_messages")
            path.ring.admit(job.client)
        except Refused as exc:
            return respond(path.fail(job, Failure(exc.status, str(exc), exc.kind, exc.code,
                                                  exc.retry_after)))
        shape = Shape(job, chat)
        mode = request.headers.get("x-triage-stream") or settings.stream
        if body.stream and mode == "first":
            return StreamingResponse(first_stream(path, job, shape),
                                     media_type="text/event-stream",
                                     headers={"x-triage-id": job.ident})
        failed = await path.attempt(job)
        if failed is not None:
            return respond(failed)
        if body.stream:
            return StreamingResponse(shape.events(job.answer), media_type="text/event-stream",
                                     headers=path.headers(job))
        return JSONResponse(shape.whole(), headers=path.headers(job))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}"
                          for e in exc.errors()[:5])
        path.metrics.failed("unknown", 400)
        return error(400, f"invalid request: {where}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own errors (an unreadable body, a wrong method) in OpenAI's shape."""
        path.metrics.failed("unknown", exc.status_code)
        return error(exc.status_code, f"invalid request: {exc.detail}")

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(exc).__name__}", "server_error")

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes,
                       on_refused=lambda: path.metrics.failed("unknown", 413))

    @app.get("/health")
    async def health() -> dict:
        breaker = pool.breaker
        return {"status": "ok", "models": list(pool.models), "policies": list(policies),
                "circuits": {m: {"state": state, "trips": breaker.trips(m)}
                             for m, state in breaker.snapshot().items()} if breaker else {},
                "in_flight": path.admission.running, "queued": path.admission.waiting}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(path.metrics.render(path.admission.running, path.admission.waiting,
                                            pool.breaker),
                        media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            client_of(request)
        except Refused as exc:
            return refusal(exc)
        data = [{"id": name, "object": "model", "owned_by": "triage", "kind": "policy"}
                for name in policies]
        data += [{"id": name, "object": "model", "owned_by": "triage", "kind": "model"}
                 for name in pool.models]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, request: Request) -> Response:
        return await serve(request, body, [m.model_dump() for m in body.messages], chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request) -> Response:
        text = body.text()
        if text is None:
            return error(400, "invalid request: prompt: give one prompt (a string or a list "
                              "of one)")
        return await serve(request, body, [{"role": "user", "content": text}], chat=False)

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackBody, request: Request) -> Response:
        """Attach a quality score (0-1) to an earlier response, by its id."""
        try:
            client = client_of(request)
        except Refused as exc:
            return refusal(exc)
        result = await path.feedback(body.id, body.score, client.name if client else None)
        if result is None:
            return error(404, f"no response {body.id!r} to attach feedback to",
                         "not_found_error", "response_not_found")
        return JSONResponse(result)

    return app
