"""A pool of live models behind one name each, and the adapter the step loop drives.

:class:`ModelPool` sends each model's calls to its backend (embedded llama.cpp or
OpenAI-compatible HTTP). Its :meth:`ModelPool.acall` answers a group of queries for one
model, concurrently within that model's limits, and returns the same :class:`StepResult` a
replay returns, so a policy cannot tell live from recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from llmtriage.backends.base import Queries, StepResult
from llmtriage.backends.catalog import Catalog
from llmtriage.backends.live import ChatRequest, Completion, LiveBackend

RequestFor = Callable[[str], ChatRequest]
Confidence = Callable[[Completion], float]


def plain_request(prompt: str) -> ChatRequest:
    return ChatRequest.ask(prompt, max_tokens=32)


class ModelPool:
    def __init__(
        self,
        catalog: Catalog,
        *,
        request_for: RequestFor = plain_request,
        confidence: Confidence | None = None,
    ) -> None:
        self.catalog = catalog
        self.models = tuple(catalog.names())
        self.request_for = request_for
        self.confidence = confidence
        self._backends: dict[str, LiveBackend] = {}
        #: Every completion of the last acall per query index, for reports (ask, gateway).
        self.completions: dict[int, list[Completion]] = {}

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

    async def acall(self, model: int, queries: Queries, idx: np.ndarray) -> StepResult:
        name = self.models[model]
        done = await asyncio.gather(
            *(self.complete(name, self.request_for(str(queries.prompts[i]))) for i in idx)
        )
        for i, c in zip(idx.tolist(), done, strict=True):
            self.completions.setdefault(i, []).append(c)

        def column(values: list[float | None]) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

        conf = [self.confidence(c) if self.confidence else None for c in done]
        return StepResult(
            confidence=column(conf),
            cost_usd=column([c.cost_usd for c in done]),
            latency_ms=column([c.latency_ms for c in done]),
            tokens_in=column([c.tokens_in for c in done]),
            tokens_out=column([c.tokens_out for c in done]),
            energy_j=column([c.energy_j for c in done]),
            answers=[c.text for c in done],
        )

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
