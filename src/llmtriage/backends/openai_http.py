"""OpenAI-compatible HTTP backend: OpenAI, vLLM, llama.cpp server, Ollama, most providers.

Retries with exponential backoff (and jitter) on 429 and 5xx and on connection failures,
honouring ``Retry-After``; per-model timeouts; streaming over server-sent events. API keys
come from the catalog (an environment variable or a secret) and are sent only in the
Authorization header: error messages carry the status and a short excerpt of the body,
never the request headers.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from llmtriage.backends.catalog import Catalog, ModelSpec
from llmtriage.backends.live import (
    BackendError,
    ChatRequest,
    Completion,
    TokenLogprob,
    parse_chat_response,
    parse_logprobs,
)

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: Backoff: first wait, growth factor, and cap (seconds); Retry-After overrides, capped too.
BACKOFF_BASE, BACKOFF_FACTOR, BACKOFF_CAP = 0.25, 2.0, 8.0


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    # An upstream's header is untrusted: no NaN, no infinity, at most an hour.
    return min(3600.0, max(0.0, seconds)) if math.isfinite(seconds) else None


class OpenAIBackend:
    def __init__(self, catalog: Catalog, client: httpx.AsyncClient | None = None) -> None:
        self.catalog = catalog
        self._client = client
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256))
            self._limits, self._loop = {}, loop
        return self._client

    def _limit(self, spec: ModelSpec) -> asyncio.Semaphore:
        if spec.name not in self._limits:
            self._limits[spec.name] = asyncio.Semaphore(spec.max_concurrency)
        return self._limits[spec.name]

    @staticmethod
    def _url(spec: ModelSpec) -> str:
        assert spec.endpoint is not None
        return spec.endpoint.rstrip("/") + "/chat/completions"

    @staticmethod
    def _headers(spec: ModelSpec) -> dict[str, str]:
        key = spec.secret()
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _post(self, spec: ModelSpec, body: dict[str, Any], stream: bool
                    ) -> httpx.Response:
        """POST with retries; returns an open response with a 2xx status."""
        client = self._http()
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                request = client.build_request(
                    "POST", self._url(spec), json=body, headers=self._headers(spec),
                    timeout=httpx.Timeout(spec.timeout_s),
                )
                response = await client.send(request, stream=stream)
            except httpx.TimeoutException:
                error = BackendError(f"{spec.name}: timed out after {spec.timeout_s:g} s",
                                     retryable=True)
            except httpx.TransportError as exc:
                error = BackendError(f"{spec.name}: connection failed: {type(exc).__name__}",
                                     retryable=True)
            else:
                if response.status_code < 300:
                    return response
                text = (await response.aread()).decode(errors="replace")
                await response.aclose()
                retryable = response.status_code in RETRY_STATUSES
                wait = retry_after(response)
                error = BackendError(
                    f"{spec.name}: upstream answered {response.status_code}: {_excerpt(text)}",
                    status=response.status_code, retryable=retryable, retry_after=wait,
                )
            if not error.retryable or attempt > spec.max_retries:
                if attempt > 1:
                    raise BackendError(f"{error} (after {attempt} attempts)",
                                       status=error.status, retryable=error.retryable,
                                       retry_after=error.retry_after)
                raise error
            backoff = min(BACKOFF_CAP, BACKOFF_BASE * BACKOFF_FACTOR ** (attempt - 1))
            delay = min(BACKOFF_CAP, wait) if wait is not None else backoff
            await asyncio.sleep(delay * (1 + 0.1 * random.random()))

    def _cost(self, spec: ModelSpec, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * spec.price_in + tokens_out * spec.price_out) / 1e6

    def _energy(self, spec: ModelSpec, tokens: int) -> float | None:
        if spec.energy_j_per_token is None:
            return None
        return spec.energy_j_per_token * tokens

    async def complete(self, name: str, request: ChatRequest) -> Completion:
        spec = self.catalog.spec(name)
        body = request.payload(model=spec.remote_name or spec.name)
        async with self._limit(spec):
            start = time.perf_counter()
            response = await self._post(spec, body, stream=False)
            try:
                data = response.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise BackendError(
                    f"{name}: upstream sent a body that is not JSON: {_excerpt(response.text)}"
                ) from None
            latency_ms = (time.perf_counter() - start) * 1000
        text, tokens_in, tokens_out, logprobs, finish = parse_chat_response(data)
        return Completion(
            model=name, text=text, tokens_in=tokens_in, tokens_out=tokens_out,
            latency_ms=latency_ms, cost_usd=self._cost(spec, tokens_in, tokens_out),
            energy_j=self._energy(spec, tokens_in + tokens_out), logprobs=logprobs,
            finish_reason=finish,
        )

    async def stream(self, name: str, request: ChatRequest) -> AsyncIterator[str | Completion]:
        """Yield text deltas as they arrive, then the assembled :class:`Completion`."""
        spec = self.catalog.spec(name)
        body = request.payload(model=spec.remote_name or spec.name, stream=True)
        body["stream_options"] = {"include_usage": True}
        async with self._limit(spec):
            start = time.perf_counter()
            response = await self._post(spec, body, stream=True)
            parts: list[str] = []
            logprobs: list[TokenLogprob] = []
            usage: dict[str, Any] = {}
            finish = "stop"
            done = False
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = json.loads(payload)
                    except json.JSONDecodeError:
                        raise BackendError(
                            f"{name}: malformed stream chunk: {_excerpt(payload)}") from None
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or ():
                        delta = (choice.get("delta") or {}).get("content") or ""
                        logprobs.extend(parse_logprobs(choice) or ())
                        finish = choice.get("finish_reason") or finish
                        if delta:
                            parts.append(delta)
                            yield delta
            except httpx.HTTPError as exc:
                raise BackendError(
                    f"{name}: stream broke off after {len(parts)} chunks: {type(exc).__name__}"
                ) from None
            finally:
                await response.aclose()
            if not done:
                raise BackendError(f"{name}: stream ended without [DONE] after "
                                   f"{len(parts)} chunks")
            latency_ms = (time.perf_counter() - start) * 1000
        tokens_in = int(usage.get("prompt_tokens", 0))
        tokens_out = int(usage.get("completion_tokens", len(logprobs) or len(parts)))
        yield Completion(
            model=name, text="".join(parts), tokens_in=tokens_in, tokens_out=tokens_out,
            latency_ms=latency_ms, cost_usd=self._cost(spec, tokens_in, tokens_out),
            energy_j=self._energy(spec, tokens_in + tokens_out), logprobs=logprobs or None,
            finish_reason=finish,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
