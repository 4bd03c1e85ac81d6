"""A pool of live models behind one name each, and the adapter the step loop drives.

:class:`ModelPool` sends each model's calls to its backend (embedded llama.cpp or
OpenAI-compatible HTTP). Its :meth:`ModelPool.acall` answers a group of queries for one
model, concurrently within that model's limits, and returns the same :class:`StepResult` a
replay returns, so a policy cannot tell live from recorded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from llmtriage.backends.base import LiveOptions, Queries, StepResult, gather_all
from llmtriage.backends.breaker import CircuitBreaker
from llmtriage.backends.catalog import Catalog, ModelSpec
from llmtriage.backends.latency import LatencyTracker
from llmtriage.backends.live import BackendError, ChatRequest, Completion, LiveBackend

RequestFor = Callable[[str], ChatRequest]
Confidence = Callable[[Completion], float]
#: Receives the first model's answer as it is generated (text deltas); ``None`` means
#: "forget what was sent" (that call failed and another model answers instead).
TokenSink = Callable[[str | None], None]


class ScoredSignal(Protocol):
    confidence: float
    extra: list[Completion]


#: An async confidence signal: (pool, model, request, answer) -> confidence and the extra
#: completions it needed (see llmtriage.signals.live).
Signal = Callable[["ModelPool", str, ChatRequest, Completion], Awaitable[ScoredSignal]]


def plain_request(prompt: str) -> ChatRequest:
    return ChatRequest.ask(prompt, max_tokens=32)


def priced_at_most(spec: ModelSpec, messages: Sequence[dict[str, str]], max_tokens: int
                   ) -> float:
    """The most a call may cost at the model's prices: UTF-8 bytes bound the prompt's
    tokens (a few more a message for the chat template), ``max_tokens`` the answer's."""
    prompt = sum(len(m["content"].encode()) + 8 for m in messages)
    return (spec.price_in * prompt + spec.price_out * max_tokens) / 1e6


def measured(calls: Sequence[Completion], field: str) -> float:
    """An answer's measurement (``cost_usd``, ``latency_ms``, ...) plus its signal's calls,
    paid in sequence; NaN when one of them does not know it."""
    parts = [getattr(c, field) for c in calls]
    return math.nan if any(v is None for v in parts) else float(sum(parts))


class ModelPool:
    """The loaded models and how to reach them; it keeps nothing of any one request (what a
    request did is in its trace)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        request_for: RequestFor = plain_request,
        confidence: Confidence | None = None,
        signal: Signal | None = None,
        breaker: CircuitBreaker | None = None,
        fallback: bool = False,
        backends: dict[str, LiveBackend] | None = None,
    ) -> None:
        """``request_for`` builds the request of a query that brings none; ``confidence``
        scores an answer for free and ``signal`` may call models to score it (what those
        calls cost is added to the step), both by default only: a policy's own signal goes
        first. With a ``breaker``, a model whose circuit is open is not called; with
        ``fallback``, a model that fails (after its backend's retries) or whose circuit is
        open is replaced by the next model of the catalog (wrapping around), and the step
        records the model that answered. ``backends`` answers a backend kind's models
        elsewhere (Ray Serve deployments of the embedded models) instead of in-process."""
        self.catalog = catalog
        self.models = tuple(catalog.names())
        self.request_for = request_for
        self.confidence = confidence
        self.signal = signal
        self.breaker = breaker
        self.fallback = fallback
        self._backends: dict[str, LiveBackend] = dict(backends or {})
        self.latency = LatencyTracker()

    def backend(self, name: str) -> LiveBackend:
        spec = self.catalog.spec(name)
        kind = spec.backend
        if kind not in self._backends:
            if kind == "llamacpp":
                from llmtriage.backends.llamacpp import LlamaCppBackend

                self._backends[kind] = LlamaCppBackend(self.catalog)
            else:
                from llmtriage.backends.openai_http import OpenAIBackend

                self._backends[kind] = OpenAIBackend(self.catalog)
        return self._backends[kind]

    async def complete(self, name: str, request: ChatRequest) -> Completion:
        return await self.backend(name).complete(name, request)

    async def _streamed(self, name: str, request: ChatRequest, sink: TokenSink) -> Completion:
        backend = self.backend(name)
        if not hasattr(backend, "stream"):  # the whole answer at once, as soon as it exists
            completion = await backend.complete(name, request)
            sink(completion.text)
            return completion
        try:
            async for part in backend.stream(name, request):
                if isinstance(part, Completion):
                    return part
                sink(part)
        except BaseException:
            sink(None)
            raise
        raise BackendError(f"{name}: stream ended without a completion")

    def fallbacks(self, name: str, allowed: bool = True) -> list[str]:
        """``name``, then (with fallback on) the other models in catalog order after it."""
        if not (self.fallback and allowed):
            return [name]
        k = self.models.index(name)
        return list(self.models[k:] + self.models[:k])

    async def guarded(self, name: str, request: ChatRequest,
                      sink: TokenSink | None = None, fallback: bool = True) -> Completion:
        """Call ``name`` through the breaker, falling back to other models if allowed; the
        completion names the model that answered."""
        errors: list[BackendError] = []
        for candidate in self.fallbacks(name, fallback):
            if self.breaker is not None and not self.breaker.allow(candidate):
                wait = self.breaker.retry_in(candidate)
                errors.append(BackendError(
                    f"{candidate}: circuit open after repeated failures; next try in "
                    f"{wait:.0f} s", status=503, retryable=True, retry_after=wait))
                continue
            began = time.perf_counter()
            try:
                with self.latency.calling(candidate):
                    if sink is None:
                        completion = await self.complete(candidate, request)
                    else:
                        completion = await self._streamed(candidate, request, sink)
            except BackendError as exc:
                if exc.upstream_fault:  # a model failing slowly is slow to anyone waiting
                    self.latency.observe(candidate, (time.perf_counter() - began) * 1000,
                                         at_least=True)
                if self.breaker is not None:
                    if exc.saturated:  # never reached the upstream
                        self.breaker.abandon(candidate)
                    elif exc.upstream_fault:
                        self.breaker.failure(candidate)
                    else:  # the upstream works; it refused this request
                        self.breaker.success(candidate)
                errors.append(exc)
                continue
            except BaseException:
                if self.breaker is not None:  # cancelled: free a half-open probe slot
                    self.breaker.abandon(candidate)
                self.latency.observe(candidate, (time.perf_counter() - began) * 1000,
                                     at_least=True)
                raise
            if self.breaker is not None:
                slow = self.catalog.spec(candidate).slow_call_s
                if slow is not None and completion.latency_ms > slow * 1000:
                    self.breaker.failure(candidate)  # answered, but too slowly to keep using
                else:
                    self.breaker.success(candidate)
            self.latency.observe(candidate, completion.latency_ms, completion.cost_usd)
            if candidate != name:
                completion.extra["fallback_from"] = name
            return completion
        if len(errors) == 1:
            raise errors[0]
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        raise BackendError("all fallbacks failed: " + "; ".join(str(e) for e in errors),
                           status=errors[-1].status, retryable=True,
                           retry_after=min(waits) if len(waits) == len(errors) else None)

    def estimate(self, model: int, queries: Queries, idx: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Per query: the expected latency of calling ``model`` now (recent calls and the
        queue ahead; the catalog's prior before any) and the most it may cost (its prices
        at the request's size, UTF-8 bytes bounding its prompt tokens, and max_tokens; a
        model priced by its energy: its recent mean)."""
        name = self.models[model]
        spec = self.catalog.spec(name)
        latency = self.latency.expected_ms(name, spec.max_concurrency, spec.expected_latency_ms)
        energy = self.latency.mean_cost(name) if spec.price_out == 0 else 0.0
        costs = [priced_at_most(spec, request.messages, request.max_tokens) + energy
                 for request in (self._request(queries, i) for i in idx.tolist())]
        return np.full(len(idx), latency), np.array(costs, dtype=np.float64)

    def _request(self, queries: Queries, i: int) -> ChatRequest:
        if queries.requests is not None:
            return queries.requests[i]
        request = self.request_for(str(queries.prompts[i]))
        if queries.conversations is not None:
            request = replace(request, messages=tuple(queries.conversations[i]))
        return request

    async def answer(self, name: str, request: ChatRequest, options: LiveOptions
                     ) -> tuple[Completion, float | None, list[Completion]]:
        """One request's answer from ``name`` (or its fallback), its confidence by the
        options' signal (else the pool's), and the calls that signal made."""
        answer = await self.guarded(name, request, options.sink, options.fallback)
        signal = options.signal or self.signal
        if signal is not None:
            scored = await signal(self, answer.model, request, answer)
            return answer, scored.confidence, list(scored.extra)
        return answer, self.confidence(answer) if self.confidence else None, []

    async def acall(self, model: int, queries: Queries, idx: np.ndarray,
                    options: LiveOptions | None = None) -> StepResult:
        name = self.models[model]
        options = options or LiveOptions()
        done = await gather_all([self.answer(name, self._request(queries, i), options)
                                 for i in idx.tolist()])

        def column(field: str) -> np.ndarray:
            return np.array([measured((answer, *extra), field) for answer, _, extra in done],
                            dtype=np.float64)

        conf = [np.nan if c is None else c for _, c, _ in done]
        return StepResult(
            confidence=np.array(conf, dtype=np.float64),
            cost_usd=column("cost_usd"),
            latency_ms=column("latency_ms"),
            tokens_in=column("tokens_in"),
            tokens_out=column("tokens_out"),
            energy_j=column("energy_j"),
            answers=[answer.text for answer, _, _ in done],
            models=np.array([self.models.index(a.model) for a, _, _ in done], dtype=np.int64),
            completions=[answer for answer, _, _ in done],
            signal_calls=[extra for _, _, extra in done],
        )

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
