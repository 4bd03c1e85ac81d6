"""The OpenAI-compatible gateway: any policy (or plain model) behind /v1/chat/completions.

The ``model`` field names a policy (a cascade, a router) or a model of the catalog (passed
through). The policy runs through the same step loop as in ``bench``; every response says
which model answered and why, in a ``triage`` extension field and in ``x-triage-*`` headers.
Streaming sends the accepted answer as server-sent events once the policy has accepted it
(a cascade must finish judging before anything can be streamed).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from llmtriage.backends.base import Queries
from llmtriage.backends.live import BackendError, ChatRequest
from llmtriage.backends.pool import ModelPool
from llmtriage.policies.base import Policy, Trace
from llmtriage.policies.baselines import SingleModel
from llmtriage.policies.loop import PolicyError, arun_policy
from llmtriage.serving.metrics import GatewayMetrics

MAX_BODY_BYTES = 1 << 20


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class ChatBody(BaseModel):
    """The fields Triage uses; other OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=500)
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    stream: bool = False


def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def explain(trace: Trace, pool: ModelPool, policy_name: str) -> dict:
    """Which models were called, their confidences, cost and latency; who answered."""
    steps = []
    for k, completion in enumerate(pool.completions.get(0, [])):
        confidence = float(trace.steps.column("confidence", k)[0])
        steps.append({
            "model": completion.model,
            "confidence": None if confidence != confidence else round(confidence, 6),
            "latency_ms": round(completion.latency_ms, 1),
            "cost_usd": completion.cost_usd,
        })
    accepted = int(trace.accepted_step[0])
    return {
        "policy": policy_name,
        "answered_by": trace.models[int(trace.accepted_model[0])],
        "accepted_step": accepted,
        "steps": steps,
        "cost_usd": float(trace.total("cost_usd")[0]),
        "latency_ms": round(float(trace.total("latency_ms")[0]), 1),
    }


def create_app(pool: ModelPool, policies: dict[str, Policy]) -> FastAPI:
    app = FastAPI(title="Triage gateway", version="0.1.0")
    metrics = GatewayMetrics()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}"
                          for e in exc.errors()[:5])
        return error(400, f"invalid request: {where}")

    @app.middleware("http")
    async def limit_size(request: Request, call_next):  # noqa: ANN001, ANN202
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return error(413, f"request body over {MAX_BODY_BYTES} bytes")
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": list(pool.models), "policies": list(policies)}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict:
        data = [{"id": name, "object": "model", "owned_by": "triage", "kind": "policy"}
                for name in policies]
        data += [{"id": name, "object": "model", "owned_by": "triage", "kind": "model"}
                 for name in pool.models]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody):  # noqa: ANN202
        if body.model in policies:
            policy = policies[body.model]
        elif body.model in pool.models:
            policy = SingleModel(body.model)
        else:  # labelled "unknown": a client must not be able to mint new metric series
            metrics.failed("unknown", 404)
            return error(404, f"no policy or model {body.model!r}; GET /v1/models lists them",
                         "not_found_error")
        users = [m.content for m in body.messages if m.role == "user"]
        if not users:
            return error(400, "invalid request: messages need at least one user turn")
        conversation = [m.model_dump() for m in body.messages]
        max_tokens = body.max_completion_tokens or body.max_tokens or 256
        view = pool.with_requests(lambda text: ChatRequest.ask(
            text, max_tokens=max_tokens, temperature=body.temperature))
        queries = Queries.from_texts([users[-1]])
        queries = Queries(queries.prompt_ids, queries.prompts, queries.tasks,
                          conversations=[conversation])
        started = time.perf_counter()
        try:
            trace = await arun_policy(policy, view, queries)
        except BackendError as exc:
            metrics.failed(body.model, 502)
            return error(502, f"upstream failed: {exc}", "upstream_error")
        except PolicyError as exc:
            metrics.failed(body.model, 500)
            return error(500, f"policy failed: {exc}", "server_error")
        info = explain(trace, view, body.model)
        elapsed = time.perf_counter() - started
        info["gateway_ms"] = round(elapsed * 1000, 1)
        metrics.observe(body.model, elapsed, info["steps"])
        answer = trace.answers[0][int(trace.accepted_step[0])] if trace.answers else ""
        headers = {
            "x-triage-policy": body.model,
            "x-triage-model": info["answered_by"],
            "x-triage-models-called": ",".join(s["model"] for s in info["steps"]),
            "x-triage-cost-usd": f"{info['cost_usd']:.3e}",
            "x-triage-latency-ms": f"{info['latency_ms']:.1f}",
        }
        completions = view.completions.get(0, [])
        usage = {
            "prompt_tokens": sum(c.tokens_in for c in completions),
            "completion_tokens": sum(c.tokens_out for c in completions),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if body.stream:
            return StreamingResponse(stream(ident, created, info["answered_by"], answer, info),
                                     media_type="text/event-stream", headers=headers)
        return JSONResponse({
            "id": ident, "object": "chat.completion", "created": created,
            "model": info["answered_by"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
            "usage": usage, "triage": info,
        }, headers=headers)

    return app


async def stream(ident: str, created: int, model: str, answer: str, info: dict
                 ) -> AsyncIterator[bytes]:
    """The accepted answer as chat.completion.chunk events, word by word, then [DONE]."""

    def event(delta: dict, finish: str | None = None, extra: dict | None = None) -> bytes:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created,
                 "model": model, "choices": [{"index": 0, "delta": delta,
                                              "finish_reason": finish}]}
        if extra:
            chunk.update(extra)
        return f"data: {json.dumps(chunk)}\n\n".encode()

    yield event({"role": "assistant", "content": ""})
    words = answer.split(" ")
    for i, word in enumerate(words):
        yield event({"content": word if i == 0 else " " + word})
    yield event({}, "stop", {"triage": info})
    yield b"data: [DONE]\n\n"
