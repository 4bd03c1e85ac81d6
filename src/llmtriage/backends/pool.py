"""A pool of live models behind one name each, and the adapter the step loop drives.

:class:`ModelPool` sends each model's calls to its backend (embedded llama.cpp or
OpenAI-compatible HTTP). Its :meth:`ModelPool.acall` answers a group of queries for one
model, concurrently within that model's limits, and returns the same :class:`StepResult` a
replay returns, so a policy cannot tell live from recorded.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

import numpy as np

from llmtriage.backends.base import Queries, StepResult
from llmtriage.backends.catalog import Catalog
from llmtriage.backends.live import ChatRequest, Completion, LiveBackend

RequestFor = Callable[[str], ChatRequest]
Confidence = Callable[[Completion], float]


class ScoredSignal(Protocol):
    confidence: float
    extra: list[Completion]


#: An async confidence signal: (pool, model, request, answer) -> confidence and the extra
#: completions it needed (see llmtriage.signals.live).
Signal = Callable[["ModelPool", str, ChatRequest, Completion], Awaitable[ScoredSignal]]


def plain_request(prompt: str) -> ChatRequest:
    return ChatRequest.ask(prompt, max_tokens=32)


class ModelPool:
    def __init__(
        self,
        catalog: Catalog,
        *,
        request_for: RequestFor = plain_request,
        confidence: Confidence | None = None,
        signal: Signal | None = None,
    ) -> None:
        """``confidence`` scores an answer for free; ``signal`` may call models to score it,
        and what those calls cost is added to the step."""
        self.catalog = catalog
        self.models = tuple(catalog.names())
        self.request_for = request_for
        self.confidence = confidence
        self.signal = signal
        self._backends: dict[str, LiveBackend] = {}
        #: Per query index: the answers, one per step, and the calls signals made to score
        #: them (for reports: ask, the gateway).
        self.completions: dict[int, list[Completion]] = {}
        self.signal_calls: dict[int, list[Completion]] = {}

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

    def with_requests(self, request_for: RequestFor) -> ModelPool:
        """The same models (nothing reloaded) with another way of building requests and
        fresh per-query records: one per gateway request."""
        view = copy.copy(self)
        view.request_for = request_for
        view.completions, view.signal_calls = {}, {}
        return view

    async def _answer(self, name: str, prompt: str, conversation: list[dict[str, str]] | None
                      ) -> tuple[Completion, float | None, list[Completion]]:
        request = self.request_for(prompt)
        if conversation is not None:
            request = replace(request, messages=tuple(conversation))
        answer = await self.complete(name, request)
        if self.signal is not None:
            scored = await self.signal(self, name, request, answer)
            return answer, scored.confidence, list(scored.extra)
        return answer, self.confidence(answer) if self.confidence else None, []

    async def acall(self, model: int, queries: Queries, idx: np.ndarray) -> StepResult:
        name = self.models[model]
        done = await asyncio.gather(
            *(self._answer(name, str(queries.prompts[i]),
                           queries.conversations[i] if queries.conversations else None)
              for i in idx)
        )
        for i, (answer, _, extra) in zip(idx.tolist(), done, strict=True):
            self.completions.setdefault(i, []).append(answer)
            self.signal_calls.setdefault(i, []).extend(extra)

        def column(field: str) -> np.ndarray:
            """The answer's measurement plus its signal's calls (paid in sequence)."""
            values = []
            for answer, _, extra in done:
                parts = [getattr(c, field) for c in (answer, *extra)]
                values.append(np.nan if any(v is None for v in parts) else float(sum(parts)))
            return np.array(values, dtype=np.float64)

        conf = [np.nan if c is None else c for _, c, _ in done]
        return StepResult(
            confidence=np.array(conf, dtype=np.float64),
            cost_usd=column("cost_usd"),
            latency_ms=column("latency_ms"),
            tokens_in=column("tokens_in"),
            tokens_out=column("tokens_out"),
            energy_j=column("energy_j"),
            answers=[answer.text for answer, _, _ in done],
        )

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
