"""What every backend takes and returns: a batch of queries in, per-query results out.

Backends know nothing of policies; policies and the step loop speak these types.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from llmtriage.data.table import OutcomeTable

if TYPE_CHECKING:
    from llmtriage.backends.live import ChatRequest, Completion

#: Per-step measurements a backend returns and a state records.
STEP_FIELDS = ("confidence", "cost_usd", "latency_ms", "tokens_in", "tokens_out", "energy_j")


@dataclass(frozen=True)
class Queries:
    """What a policy may see of a query before calling any model."""

    prompt_ids: np.ndarray
    prompts: np.ndarray
    tasks: np.ndarray
    #: Row of each query in the table a replay backend reads (offline only).
    rows: np.ndarray | None = None
    #: The whole conversation of each query, for live models (the prompt is its last turn).
    conversations: list[list[dict[str, str]]] | None = None
    #: The request each query sends to live models (its messages, token limit,
    #: temperature); without it a live backend builds one from the prompt.
    requests: list[ChatRequest] | None = None
    #: Per query, the model a sticky session binds it to (None: free to route).
    pinned: list[str | None] | None = None

    @classmethod
    def from_table(cls, table: OutcomeTable) -> Queries:
        return cls(table.prompt_ids, table.prompts, table.tasks, np.arange(table.n_prompts))

    @classmethod
    def from_texts(cls, texts: list[str], task: str = "", **live: Any) -> Queries:
        """Queries of the given texts; ``live``: the fields only live queries have."""
        ids = np.array([f"q{i}" for i in range(len(texts))], dtype=object)
        return cls(ids, np.array(texts, dtype=object), np.full(len(texts), task, dtype=object),
                   **live)

    def __len__(self) -> int:
        return len(self.prompt_ids)


@dataclass
class StepResult:
    """A backend's answer for a group of queries sent to one model (arrays aligned to them).

    A measurement the backend cannot give (latency of a recorded table without timings) is
    None, not an array of NaN.
    """

    confidence: np.ndarray | None = None
    cost_usd: np.ndarray | None = None
    latency_ms: np.ndarray | None = None
    tokens_in: np.ndarray | None = None
    tokens_out: np.ndarray | None = None
    energy_j: np.ndarray | None = None
    answers: list[str] | None = None
    #: Per query, the model index that actually answered, where it may differ from the one
    #: asked for (a live pool falling back to another model); None: the one asked for.
    models: np.ndarray | None = None
    #: Live only: each query's completion, and the calls its confidence signal made.
    completions: list[Completion] | None = None
    signal_calls: list[list[Completion]] | None = None


def charged(result: StepResult, latency_ms: float, cost_usd: float, energy_j: float
            ) -> StepResult:
    """The result with a per-answer charge added to every query's latency, cost and energy
    (those the backend reported; an unknown measurement stays unknown)."""
    def plus(values: np.ndarray | None, amount: float) -> np.ndarray | None:
        return values if values is None or amount == 0 else values + amount

    return replace(result, latency_ms=plus(result.latency_ms, latency_ms),
                   cost_usd=plus(result.cost_usd, cost_usd),
                   energy_j=plus(result.energy_j, energy_j))


@dataclass(frozen=True)
class LiveOptions:
    """How one run calls live models (a replay ignores them)."""

    #: Scores each answer; None: the signal the policy names (``policy.signal``), or the
    #: backend's own default for policies that judge no answer.
    signal: Any = None
    #: Receives the first model's answer as it is generated (see ``ModelPool``).
    sink: Any = None
    #: Whether a failing model may be replaced by another (a request naming one model
    #: directly must get that model or an error).
    fallback: bool = True
    #: Take each decision on a worker thread: for policies whose decisions embed the query
    #: (milliseconds of model work that would otherwise stall every other request on the
    #: event loop, and that may wait on a shared embedder elsewhere).
    decide_in_thread: bool = False
    #: The request's deadline and spend cap (a policies.limits.Limits), kept by the loop
    #: with the backend's estimates; the deadline counts from ``started``
    #: (``time.perf_counter()`` when the request arrived).
    limits: Any = None
    started: float | None = None


T = TypeVar("T")


async def gather_all(calls: list[Awaitable[T]]) -> list[T]:
    """``asyncio.gather``, but one call (a live request's usual case) is awaited in
    place: scheduling it as a task would cost more than the pass-through itself."""
    if len(calls) == 1:
        return [await calls[0]]
    return list(await asyncio.gather(*calls))
