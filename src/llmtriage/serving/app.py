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

Every request gets an answer or an OpenAI-style error (401, 404, 413, 422 for limits no
model can meet, 429 with Retry-After for the gateway's limits and for upstreams that
rate-limit, 400, 502/503/504 from upstreams, 500), and is counted in ``/metrics`` and
written to the request log. A client that disconnects cancels its request, upstream calls
included. With keys configured, every endpoint but a bare ``/health`` liveness answer needs
one (``/metrics`` may be opened to a scraper with ``metrics_public``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmtriage.backends.catalog import Catalog
from llmtriage.backends.live import LiveBackend
from llmtriage.backends.pool import ModelPool
from llmtriage.data.errors import faults
from llmtriage.data.jsontext import loads
from llmtriage.policies.base import Policy
from llmtriage.policies.limits import Limits
from llmtriage.policies.routers.base import quality_routers
from llmtriage.serving.config import STREAM_MODES, ClientKey, GatewayConfig, GatewaySettings
from llmtriage.serving.guard import Refused
from llmtriage.serving.middleware import Ingress
from llmtriage.serving.requests import CLIENT_GONE, Failure, Job, RequestPath
from llmtriage.serving.schemas import (
    LIMIT_HEADERS,
    ChatBody,
    CompletionBody,
    ErrorBody,
    FeedbackBody,
    Reply,
    error,
    limits_of,
)
from llmtriage.serving.sessions import MAX_SESSION_ID
from llmtriage.serving.streaming import Shape, disconnected, first_stream
from llmtriage.signals.embedder import Embedder

#: The longest task label a request may give (``x-triage-task``).
MAX_TASK = 200
#: The ``x-triage-*`` headers a completion request may send; any other is a 400, as an
#: unknown field of the body's ``triage`` extension is (a misspelt spend cap, ignored,
#: would be no cap at all).
REQUEST_HEADERS = ("x-triage-session", "x-triage-task", "x-triage-stream", *LIMIT_HEADERS)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses an endpoint returns (OpenAI's error shape)."""
    meaning = {400: "invalid request", 401: "missing or invalid API key",
               404: "no such policy, model or response", 405: "method not allowed",
               413: "request body too large", 422: "no model can serve the request within "
               "its limits (x-triage-max-latency-ms, x-triage-max-cost-usd)",
               429: "rate limit, budget or capacity; see Retry-After",
               500: "internal error", 502: "upstream failed",
               503: "upstream unavailable or at capacity", 504: "deadline passed"}
    return {s: {"model": ErrorBody, "description": meaning[s]} for s in statuses}


#: Bodies the completion endpoints parse themselves (see :class:`Ingress`), declared to
#: the OpenAPI document by hand.
RAW_BODIES: tuple[type[BaseModel], ...] = (ChatBody, CompletionBody, FeedbackBody)
Body = TypeVar("Body", bound=BaseModel)
#: How long a request's work runs before a task starts watching for its client to go away.
WATCH_AFTER_S = 0.05


def body_of(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of an endpoint that parses ``model`` itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def headers_of(request: Request) -> dict[str, str]:
    """A request's headers in one pass (Starlette's mapping scans them at every lookup);
    the first of repeated ones."""
    return {k.decode("latin-1"): v.decode("latin-1")
            for k, v in reversed(request.scope["headers"])}


def create_app(pool: ModelPool, policies: dict[str, Policy],
               settings: GatewaySettings | None = None,
               keys: list[ClientKey] | None = None,
               limits: dict[str, Limits] | None = None) -> Ingress:
    """The gateway over a pool of models and the named policies (each scores answers with
    the signal it holds); ``limits``: per policy, those of a request that sets none. An
    ASGI app: the FastAPI app behind its :class:`Ingress`."""
    settings = settings or GatewaySettings(request_log=None)
    path = RequestPath(pool, policies, settings, keys or [], limits)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sharing = asyncio.create_task(path.share_circuits()) if settings.state_url else None
        yield  # uvicorn has finished the in-flight requests when this resumes
        if sharing is not None:
            sharing.cancel()
        await path.aclose()

    app = FastAPI(title="Triage gateway", version="0.3.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    answers = {200: {"description": "the completion, or with stream: server-sent events",
                     "content": {"application/json": {"schema": {"type": "object"}},
                                 "text/event-stream": {"schema": {
                                     "type": "object",
                                     "properties": {"data": {"type": "string"}}}}}}}
    posts = {**answers, **documented(400, 401, 404, 413, 422, 429, 500, 502, 503, 504)}

    def respond(failure: Failure) -> JSONResponse:
        return error(failure.status, failure.message, failure.kind, failure.code,
                     failure.retry_after)

    def refusal(exc: Refused) -> JSONResponse:
        return error(exc.status, str(exc), exc.kind, exc.code, exc.retry_after)

    def client_of(headers: Mapping[str, str]) -> ClientKey | None:
        """The calling key (None with no keys configured); raises Refused."""
        return path.ring.identify(headers.get("authorization"))

    async def until_done(request: Request, work: Awaitable[Failure | None]
                         ) -> Failure | None:
        """Run ``work`` unless the client goes away first; then cancel it. The work runs
        in the request's own task; a second task watches the client, started only once
        the work has run for :data:`WATCH_AFTER_S` (a timer costs less than a task, and
        most answers come sooner: a client gone before then is noticed then)."""
        handler = asyncio.current_task()
        assert handler is not None
        gone = False
        watcher: asyncio.Task | None = None

        async def watch() -> None:
            nonlocal gone
            await disconnected(request)
            gone = True
            handler.cancel()

        def start_watching() -> None:
            nonlocal watcher
            watcher = asyncio.create_task(watch())

        timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
        try:
            return await work
        except asyncio.CancelledError:
            if not gone:
                raise
            handler.uncancel()
            return Failure(CLIENT_GONE, "client disconnected", "client_closed")
        finally:
            timer.cancel()
            if watcher is not None:
                watcher.cancel()

    async def serve(request: Request, headers: dict[str, str], body: ChatBody | CompletionBody,
                    chat: bool) -> Response:
        max_tokens = (getattr(body, "max_completion_tokens", None) or body.max_tokens
                      or settings.max_tokens)
        session = headers.get("x-triage-session") or None
        task = headers.get("x-triage-task", "")
        job = Job(ident=f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}",
                  policy_name=body.model, messages=body.conversation(), max_tokens=max_tokens,
                  temperature=body.temperature or 0.0, client=None, stop=body.stops(),
                  session=session[:MAX_SESSION_ID] if session else None,
                  task=task[:MAX_TASK])
        mode = headers.get("x-triage-stream") or settings.stream
        try:
            job.client = client_of(headers)
            if unknown := [h for h in headers if h.startswith("x-triage-")
                           and h not in REQUEST_HEADERS]:
                raise Refused(400, f"invalid request: unknown header {unknown[0][:60]!r}; a "
                                   f"request may send {', '.join(REQUEST_HEADERS)}",
                              "invalid_request_error", "unknown_header")
            if mode not in STREAM_MODES:
                raise Refused(400, "invalid request: x-triage-stream must be one of "
                                   f"{', '.join(map(repr, STREAM_MODES))}, not {mode[:40]!r}",
                              "invalid_request_error", "invalid_stream_mode")
            if session is not None and len(session) > MAX_SESSION_ID:
                raise Refused(400, f"invalid request: x-triage-session is {len(session)} "
                                   f"characters; at most {MAX_SESSION_ID}",
                              "invalid_request_error", "invalid_session")
            if len(task) > MAX_TASK:
                raise Refused(400, f"invalid request: x-triage-task is {len(task)} characters;"
                                   f" at most {MAX_TASK}", "invalid_request_error",
                              "invalid_task")
            job.cacheable = body.triage is None or body.triage.cache
            try:
                job.limits = limits_of(headers, body.triage)
            except ValueError as exc:
                raise Refused(400, f"invalid request: {exc}", "invalid_request_error",
                              "invalid_limit") from None
            if not path.knows(body.model):
                raise Refused(404, f"no policy or model {body.model!r}; GET /v1/models lists "
                                   "them", "not_found_error", "model_not_found")
            await path.admit(job)
        except Refused as exc:
            failed = await path.fail(job, Failure(exc.status, str(exc), exc.kind, exc.code,
                                                  exc.retry_after))
            await path.logged(job)
            return respond(failed)
        shape = Shape(job, chat, body.usage_chunk())
        if body.stream and mode == "first":
            return await first_stream(path, job, shape, request)
        failed = await until_done(request, path.attempt(job))
        await path.logged(job)
        if failed is not None:
            return respond(failed)
        if body.stream:
            return StreamingResponse(shape.events(job.answer), media_type="text/event-stream",
                                     headers=path.headers(job))
        return Reply(shape.whole(), headers=path.headers(job))

    def guarded(request: Request) -> JSONResponse | None:
        """The refusal for a caller without a valid key (None: let it in)."""
        try:
            client_of(request.headers)
        except Refused as exc:
            return refusal(exc)
        return None

    def rejected(message: str) -> JSONResponse:
        path.metrics.failed("unknown", 400)
        return error(400, f"invalid request: {message}")

    def parse(model: type[Body], headers: dict[str, str], raw: bytes
              ) -> Body | JSONResponse:
        """The body as ``model``, or the 400 that says what is wrong with it. Only a body
        sent as JSON: a page in a browser may send a form or text/plain to the gateway on
        its user's machine without asking first (no CORS preflight), never JSON."""
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if not (kind == "application/json" or
                (kind.startswith("application/") and kind.endswith("+json"))):
            return rejected(f"send the body as JSON (content-type: application/json), not "
                            f"{kind[:60] or 'without a content-type'}")
        try:
            data = loads(raw, constants=False)
        except ValueError as exc:  # not JSON, or not UTF-8
            return rejected(f"the body is not JSON: {exc}")
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            return rejected(faults(exc.errors()))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return rejected(faults(exc.errors(), skip=1))  # FastAPI's start at "body"

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own errors (an unreadable body, a wrong method) in OpenAI's shape,
        with their headers (a 405's Allow)."""
        path.metrics.failed("unknown", exc.status_code)
        return error(exc.status_code, f"invalid request: {exc.detail}",
                     headers=dict(exc.headers or {}))

    def crash(exc: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(exc).__name__}", "server_error")

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        return crash(exc)

    @app.api_route("/health", methods=["GET", "HEAD"], responses={200: {
        "description": "liveness; with a valid key (or none configured) also models, "
                       "policies, circuits and load"}})
    async def health(request: Request) -> dict:
        if guarded(request) is not None:  # liveness only: it names nothing
            return {"status": "ok"}
        breaker = pool.breaker
        return {"status": "ok", "models": list(pool.models), "policies": list(policies),
                "circuits": {m: {"state": state, "trips": breaker.trips(m)}
                             for m, state in breaker.snapshot().items()} if breaker else {},
                "in_flight": path.admission.running, "queued": path.admission.waiting,
                "latency": pool.latency.snapshot()}

    @app.get("/metrics", response_class=Response, responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}},
              "description": "Prometheus text format"}, **documented(401)})
    async def prometheus(request: Request) -> Response:
        if not settings.metrics_public and (refused := guarded(request)) is not None:
            return refused
        return Response(path.metrics.render(path.admission.running, path.admission.waiting,
                                            pool.breaker),
                        media_type="text/plain; version=0.0.4")

    def schema() -> dict[str, Any]:
        """FastAPI's document, with the names a request's ``model`` may take."""
        document = app.openapi()
        _, raw = models_json_schema([(m, "validation") for m in RAW_BODIES],
                                    ref_template="#/components/schemas/{model}")
        document["components"]["schemas"].update(raw["$defs"])
        for body in ("ChatBody", "CompletionBody"):
            model = document["components"]["schemas"][body]["properties"]["model"]
            model["enum"] = names()
        return document

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        return guarded(request) or JSONResponse(schema())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        return guarded(request) or get_swagger_ui_html(openapi_url="/openapi.json",
                                                       title="Triage gateway")

    @app.get("/v1/models", responses=documented(401))
    async def models(request: Request) -> Response:
        if (refused := guarded(request)) is not None:
            return refused
        return JSONResponse({"object": "list", "data": [listed(name) for name in names()]})

    def names() -> list[str]:
        return [*policies, *pool.models]  # a policy may not share a model's name

    def listed(name: str) -> dict[str, str]:
        """A policy or model as OpenAI lists a model (``kind`` says which it is)."""
        return {"id": name, "object": "model", "owned_by": "triage",
                "kind": "policy" if name in policies else "model"}

    @app.get("/v1/models/{name:path}", responses=documented(401, 404))  # names hold "/"
    async def model(name: str, request: Request) -> Response:
        if (refused := guarded(request)) is not None:
            return refused
        if name not in policies and name not in pool.models:
            return error(404, f"no policy or model {name[:200]!r}; GET /v1/models lists "
                              "them", "not_found_error", "model_not_found")
        return JSONResponse(listed(name))

    async def answer(request: Request, model: type[ChatBody] | type[CompletionBody]
                     ) -> Response:
        headers = headers_of(request)
        body = parse(model, headers, await request.body())
        if isinstance(body, JSONResponse):
            return body
        return await serve(request, headers, body, chat=model is ChatBody)

    @app.post("/v1/chat/completions", responses=posts, openapi_extra=body_of(ChatBody))
    async def chat(request: Request) -> Response:
        return await answer(request, ChatBody)

    @app.post("/v1/completions", responses=posts, openapi_extra=body_of(CompletionBody))
    async def completions(request: Request) -> Response:
        return await answer(request, CompletionBody)

    @app.post("/v1/feedback", responses=documented(400, 401, 404, 413, 429),
              openapi_extra=body_of(FeedbackBody))
    async def feedback(request: Request) -> Response:
        """Attach a quality score (0-1) to an earlier response, by its id. A response
        teaches a learning policy once; a later score replaces the earlier one."""
        headers = headers_of(request)
        body = parse(FeedbackBody, headers, await request.body())
        if isinstance(body, JSONResponse):
            return body
        try:
            client = client_of(headers)
            result = await path.feedback(body.id, body.score, client)
        except Refused as exc:
            return refusal(exc)
        if result is None:
            return error(404, f"no response {body.id!r} to attach feedback to",
                         "not_found_error", "response_not_found")
        return JSONResponse(result)

    # The completion routes as declared above, called by the ingress itself.
    direct = {route.path: route.endpoint for route in app.routes
              if isinstance(route, APIRoute) and route.endpoint in (chat, completions)}
    return Ingress(app, settings.max_body_bytes, direct=direct, crashed=crash,
                   on_refused=lambda: path.metrics.failed("unknown", 413))


def build_gateway(config: GatewayConfig, catalog: Catalog,
                  backends: dict[str, LiveBackend] | None = None,
                  embedder: Embedder | None = None) -> tuple[Ingress, list[str]]:
    """The gateway a config describes (its policies built or loaded, a circuit breaker per
    model), and the names of its policies: what ``triage serve`` runs, alone or as each
    Ray Serve replica. A replica passes ``backends`` that reach the embedded models'
    own deployments, and an ``embedder`` shared by its routers where they embed with the
    same model."""
    from llmtriage.backends.breaker import CircuitBreaker
    from llmtriage.serving.config import build_policies
    from llmtriage.signals.logprob import min_logprob

    policies = build_policies(config, catalog)
    if embedder is not None:
        for policy in policies.values():
            for router in quality_routers(policy):
                if router.embedder_ is not None and router.embedder_.name == embedder.name:
                    router.with_embedder(embedder)
    settings = config.gateway
    pool = ModelPool(catalog, confidence=min_logprob, fallback=settings.fallback,
                     breaker=CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s),
                     backends=backends)
    limits = {spec.name: spec.limits() for spec in config.policies}
    return create_app(pool, policies, settings, config.keys, limits), list(policies)
