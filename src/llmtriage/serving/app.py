"""The OpenAI-compatible gateway: any policy (or plain model) behind /v1/chat/completions.

The ``model`` field names a policy (a cascade, a router) or a model of the catalog (passed
through). The policy runs through the same step loop as in ``bench``; every response says
which model answered and why, in a ``triage`` extension field and in ``x-triage-*`` headers.

Streaming: by default the accepted answer is streamed once the policy has accepted it (a
cascade must finish judging first, so the time to the first token is the whole cascade's
latency). With ``stream = "first"`` (or the ``x-triage-stream: first`` header) the first
model's answer streams as it is generated; if the policy then escalates, a chunk carrying
``triage.retract`` (the number of characters to drop) precedes the accepted answer. Only
clients that read that field should ask for it.

Every request gets an answer or an OpenAI-style error (401, 404, 413, 429 with Retry-After,
400, 502/503 from upstreams, 500), and is counted in ``/metrics`` and written to the
request log.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmtriage.backends.base import Queries
from llmtriage.backends.live import BackendError, ChatRequest
from llmtriage.backends.pool import Confidence, ModelPool
from llmtriage.policies.base import Policy, Trace
from llmtriage.policies.baselines import SingleModel
from llmtriage.policies.loop import PolicyError, arun_policy
from llmtriage.serving.config import ClientKey, GatewaySettings
from llmtriage.serving.guard import Admission, KeyRing, Refused
from llmtriage.serving.metrics import GatewayMetrics
from llmtriage.serving.requestlog import RequestLog
from llmtriage.serving.schemas import ChatBody, CompletionBody, FeedbackBody, error
from llmtriage.serving.sessions import Sessions

#: How many recent requests keep their prompt in memory for online learning from feedback.
RECENT = 10_000


def explain(trace: Trace, pool: ModelPool, policy_name: str) -> dict:
    """Which models were called, their confidences, cost and latency; who answered."""
    steps = []
    for k, completion in enumerate(pool.completions.get(0, [])):
        confidence = float(trace.steps.column("confidence", k)[0])
        step = {
            "model": completion.model,
            # JSON has no infinities: a cut-off answer (-inf) is flagged instead.
            "confidence": round(confidence, 6) if math.isfinite(confidence) else None,
            "latency_ms": round(completion.latency_ms, 1),
            "cost_usd": completion.cost_usd,
        }
        if confidence == -math.inf:
            step["cut_off"] = True
        if "fallback_from" in completion.extra:
            step["fallback_from"] = completion.extra["fallback_from"]
        steps.append(step)
    accepted = int(trace.accepted_step[0])
    return {
        "policy": policy_name,
        "answered_by": steps[accepted]["model"] if steps else trace.models[
            int(trace.accepted_model[0])],
        "accepted_step": accepted,
        "steps": steps,
        "cost_usd": float(trace.total("cost_usd")[0]),
        "latency_ms": round(float(trace.total("latency_ms")[0]), 1),
    }


@dataclass
class Job:
    """One request on its way through the gateway."""

    ident: str
    policy_name: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    client: ClientKey | None
    session: str | None
    started: float = field(default_factory=time.perf_counter)
    info: dict[str, Any] = field(default_factory=dict)
    answer: str = ""
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The last user turn ("" for a request refused for having none)."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


def create_app(pool: ModelPool, policies: dict[str, Policy],
               settings: GatewaySettings | None = None,
               keys: list[ClientKey] | None = None,
               confidences: dict[str, Confidence] | None = None) -> FastAPI:
    """``confidences``: per policy name, the live confidence its steps get, when it is not
    the pool's (a policy fitted on recorded confidences must see the same statistic)."""
    confidences = confidences or {}
    settings = settings or GatewaySettings(request_log=None)
    log = RequestLog(settings.request_log, settings.log_text) if settings.request_log else None
    ring = KeyRing(keys or [], log.spent_by_client() if log else None)
    admission = Admission(settings.max_in_flight, settings.max_queue)
    sessions = Sessions(settings.session_ttl_s)
    metrics = GatewayMetrics()
    recent: OrderedDict[str, tuple[str, str, str, str | None]] = OrderedDict()
    secrets = [s for s in (spec.secret() for spec in pool.catalog.models) if s]

    def redact(text: str) -> str:
        """Upstream keys never leave the gateway, even if an upstream echoes them."""
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    if log is not None:  # an online learner catches up with the feedback it missed
        for name, policy in policies.items():
            learn = getattr(policy, "learn", None)
            if learn is not None:
                for prompt, model, score in log.with_feedback(name):
                    learn(prompt, model, score)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield  # uvicorn has finished the in-flight requests when this resumes
        await pool.aclose()
        if log is not None:
            log.close()

    app = FastAPI(title="Triage gateway", version="0.2.0", lifespan=lifespan)

    def record(job: Job, status: int, message: str | None = None) -> None:
        elapsed = time.perf_counter() - job.started
        if status == 200:
            metrics.observe(job.policy_name, elapsed, job.info["steps"])
        else:
            metrics.failed(job.policy_name if job.policy_name in policies
                           or job.policy_name in pool.models else "unknown", status)
        if log is not None:
            log.record({
                "id": job.ident, "created": time.time(),
                "client": job.client.name if job.client else None,
                "policy": job.policy_name, "session": job.session, "status": status,
                "answered_by": job.info.get("answered_by"),
                "steps": job.info.get("steps", []), "cost_usd": job.info.get("cost_usd", 0.0),
                "latency_ms": round(elapsed * 1000, 1),
                "tokens_in": job.usage.get("prompt_tokens"),
                "tokens_out": job.usage.get("completion_tokens"),
                "prompt": job.prompt, "answer": job.answer if status == 200 else None,
                "error": message,
            })

    def fail(job: Job, status: int, message: str, kind: str, code: str | None = None,
             retry_after: float | None = None) -> JSONResponse:
        message = redact(message)
        record(job, status, message)
        return error(status, message, kind, code, retry_after)

    def refuse(job: Job, exc: Refused) -> JSONResponse:
        return fail(job, exc.status, str(exc), exc.kind, exc.code, exc.retry_after)

    def choose(job: Job) -> tuple[Policy, bool]:
        """The policy to run, or the model a sticky session is bound to."""
        if job.policy_name in policies:
            if settings.sticky_sessions:
                model = sessions.lookup(job.policy_name, job.session, job.messages)
                if model is not None and model in pool.models:
                    return SingleModel(model), True
            return policies[job.policy_name], False
        return SingleModel(job.policy_name), False

    async def run(job: Job, sink=None) -> None:  # noqa: ANN001
        """Run the policy for one request; fills job.info, job.answer and job.usage."""
        policy, sticky = choose(job)
        view = pool.with_requests(lambda text: ChatRequest.ask(
            text, max_tokens=job.max_tokens, temperature=job.temperature), sink)
        view.fallback = pool.fallback and job.policy_name in policies
        view.confidence = confidences.get(job.policy_name, pool.confidence)
        queries = Queries.from_texts([job.prompt])
        queries = Queries(queries.prompt_ids, queries.prompts, queries.tasks,
                          conversations=[job.messages])
        async with admission.slot():
            trace = await arun_policy(policy, view, queries)
        job.info = explain(trace, view, job.policy_name)
        job.info["id"] = job.ident
        if sticky:
            job.info["sticky"] = True
        job.answer = trace.answers[0][int(trace.accepted_step[0])] if trace.answers else ""
        completions = view.completions.get(0, []) + view.signal_calls.get(0, [])
        job.usage = {"prompt_tokens": sum(c.tokens_in for c in completions),
                     "completion_tokens": sum(c.tokens_out for c in completions)}
        job.usage["total_tokens"] = job.usage["prompt_tokens"] + job.usage["completion_tokens"]
        job.info["gateway_ms"] = round((time.perf_counter() - job.started) * 1000, 1)
        if job.policy_name in policies and settings.sticky_sessions:
            sessions.remember(job.policy_name, job.session, job.messages, job.answer,
                              job.info["answered_by"])
        ring.charge(job.client, job.info["cost_usd"])
        recent[job.ident] = (job.policy_name, job.prompt, job.info["answered_by"],
                             job.client.name if job.client else None)
        while len(recent) > RECENT:
            recent.popitem(last=False)

    async def attempt(job: Job, sink=None) -> JSONResponse | None:  # noqa: ANN001
        """Run the job; an error response if it failed, None if it succeeded."""
        try:
            await run(job, sink)
        except Refused as exc:
            return refuse(job, exc)
        except BackendError as exc:
            if exc.retry_after is not None:
                return fail(job, 503, f"upstream unavailable: {exc}", "upstream_error",
                            "circuit_open", exc.retry_after)
            return fail(job, 502, f"upstream failed: {exc}", "upstream_error")
        except PolicyError as exc:
            return fail(job, 500, f"policy failed: {exc}", "server_error")
        except Exception as exc:  # noqa: BLE001 - the request still gets an answer
            return fail(job, 500, f"internal error: {type(exc).__name__}", "server_error")
        record(job, 200)
        return None

    def headers_of(job: Job) -> dict[str, str]:
        info = job.info
        return {
            "x-triage-id": job.ident,
            "x-triage-policy": job.policy_name,
            "x-triage-model": info["answered_by"],
            "x-triage-models-called": ",".join(s["model"] for s in info["steps"]),
            "x-triage-confidences": ",".join("" if s["confidence"] is None
                                             else f"{s['confidence']:.4g}"
                                             for s in info["steps"]),
            "x-triage-cost-usd": f"{info['cost_usd']:.3e}",
            "x-triage-latency-ms": f"{info['latency_ms']:.1f}",
        }

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
            if body.model not in policies and body.model not in pool.models:
                raise Refused(404, f"no policy or model {body.model!r}; GET /v1/models lists "
                                   "them", "not_found_error", "model_not_found")
            if not any(m["role"] == "user" for m in messages):
                raise Refused(400, "invalid request: messages need at least one user turn",
                              "invalid_request_error", "invalid_messages")
            ring.admit(job.client)
        except Refused as exc:
            return refuse(job, exc)
        shape = Shape(job, chat)
        mode = request.headers.get("x-triage-stream") or settings.stream
        if body.stream and mode == "first":
            return StreamingResponse(first_stream(job, shape), media_type="text/event-stream",
                                     headers={"x-triage-id": job.ident})
        failed = await attempt(job)
        if failed is not None:
            return failed
        if body.stream:
            return StreamingResponse(shape.events(job.answer), media_type="text/event-stream",
                                     headers=headers_of(job))
        return JSONResponse(shape.whole(), headers=headers_of(job))

    async def first_stream(job: Job, shape: Shape) -> AsyncIterator[bytes]:
        """The first model's answer as it is generated, corrected if the policy escalates."""
        deltas: asyncio.Queue[str | None] = asyncio.Queue()
        task = asyncio.create_task(attempt(job, deltas.put_nowait))
        yield shape.chunk({"role": "assistant", "content": ""} if shape.chat else "")
        sent: list[str] = []
        finished = False
        while not finished:
            getter = asyncio.ensure_future(deltas.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            batch = [getter.result()] if getter.done() else []
            if not getter.done():  # the policy is done: it will put nothing more
                getter.cancel()
                finished = True
                while not deltas.empty():
                    batch.append(deltas.get_nowait())
            for delta in batch:
                if delta is None:  # that call failed; what was sent is void
                    yield shape.chunk("", extra={"triage": {"retract": len("".join(sent))}})
                    sent = []
                else:
                    sent.append(delta)
                    yield shape.chunk(delta)
        failed = task.result()
        if failed is not None:
            yield f"data: {failed.body.decode()}\n\n".encode()
            return
        streamed = "".join(sent)
        if streamed != job.answer:  # the policy escalated: the accepted answer replaces it
            if streamed:
                yield shape.chunk("", extra={"triage": {"retract": len(streamed)}})
            yield shape.chunk(job.answer)
        yield shape.chunk("", finish="stop", extra={"triage": job.info})
        yield b"data: [DONE]\n\n"

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}"
                          for e in exc.errors()[:5])
        metrics.failed("unknown", 400)
        return error(400, f"invalid request: {where}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own errors (an unreadable body, a wrong method) in OpenAI's shape."""
        metrics.failed("unknown", exc.status_code)
        return error(exc.status_code, f"invalid request: {exc.detail}")

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(exc).__name__}", "server_error")

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes,
                       on_refused=lambda: metrics.failed("unknown", 413))

    def client_of(request: Request) -> ClientKey | None:
        """The calling key (None with no keys configured); raises Refused."""
        return ring.identify(request.headers.get("authorization"))

    def refusal(exc: Refused) -> JSONResponse:
        return error(exc.status, str(exc), exc.kind, exc.code, exc.retry_after)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": list(pool.models), "policies": list(policies),
                "circuits": {m: {"state": state, "trips": pool.breaker.trips(m)}
                             for m, state in pool.breaker.snapshot().items()}
                if pool.breaker else {},
                "in_flight": admission.running, "queued": admission.waiting}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(admission.running, admission.waiting, pool.breaker),
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
        name = client.name if client else None
        logged = await log.feedback(body.id, body.score, name) if log is not None else None
        known = recent.get(body.id)
        if known is not None and known[3] != name:
            known = None
        if logged is None and known is None:
            return error(404, f"no response {body.id!r} to attach feedback to",
                         "not_found_error", "response_not_found")
        learned = False
        if known is not None:
            policy_name, prompt, model, _ = known
            learn = getattr(policies.get(policy_name), "learn", None)
            if learn is not None:
                learned = bool(learn(prompt, model, body.score))
        return JSONResponse({"id": body.id, "score": body.score, "logged": logged is not None,
                             "learned": learned})

    return app


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


class Shape:
    """Chat or text completion: the same answer in the two OpenAI response shapes."""

    def __init__(self, job: Job, chat: bool) -> None:
        self.job, self.chat = job, chat
        self.created = int(time.time())

    def whole(self) -> dict:
        job = self.job
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": job.answer}
        else:
            choice.update(text=job.answer, logprobs=None)
        return {"id": job.ident, "object": "chat.completion" if self.chat else
                "text_completion", "created": self.created, "model": job.info["answered_by"],
                "choices": [choice], "usage": job.usage, "triage": job.info}

    def chunk(self, delta: str | dict, finish: str | None = None,
              extra: dict | None = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if self.chat:
            choice["delta"] = delta if isinstance(delta, dict) else (
                {"content": delta} if delta else {})
        else:
            choice["text"] = delta
        event = {"id": self.job.ident, "created": self.created,
                 "object": "chat.completion.chunk" if self.chat else "text_completion",
                 "model": self.job.info.get("answered_by", self.job.policy_name),
                 "choices": [choice]}
        if extra:
            event.update(extra)
        return f"data: {json.dumps(event)}\n\n".encode()

    async def events(self, answer: str) -> AsyncIterator[bytes]:
        """The accepted answer as chunks, word by word, then [DONE]."""
        yield self.chunk({"role": "assistant", "content": ""} if self.chat else "")
        for i, word in enumerate(answer.split(" ")):
            yield self.chunk(word if i == 0 else " " + word)
        yield self.chunk("", finish="stop", extra={"triage": self.job.info})
        yield b"data: [DONE]\n\n"
