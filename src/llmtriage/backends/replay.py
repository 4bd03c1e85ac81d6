"""A backend that answers from a recorded outcome table: a call is an array gather.

It is how ``triage bench`` evaluates policies, and how the live code path is tested
deterministically.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np

from llmtriage.backends.base import STEP_FIELDS, Queries, StepResult
from llmtriage.data.table import OutcomeTable


class ReplayBackend:
    def __init__(
        self,
        table: OutcomeTable,
        with_answers: bool = False,
        fields: tuple[str, ...] = STEP_FIELDS,
    ) -> None:
        """``fields``: the measurements to return (an evaluator that never reads token
        counts need not gather them)."""
        self.table = table
        self.models = table.models
        self.with_answers = with_answers and table.responses is not None
        self._recorded = [f for f in fields if table.has(f)]
        self._all_rows = np.arange(table.n_prompts)

    def call(self, model: int, queries: Queries, idx: np.ndarray) -> StepResult:
        if queries.rows is None:
            raise ValueError("a replay backend needs queries built from its table (rows)")
        rows = queries.rows[idx]
        t = self.table
        # Every prompt of the table, in order: hand out the columns themselves.
        whole = queries.rows is self._all_rows and len(idx) == t.n_prompts
        columns = {
            f: _read_only(getattr(t, f)[:, model]) if whole else getattr(t, f)[:, model][rows]
            for f in self._recorded
        }
        answers = None
        if self.with_answers:
            answers = t.responses[rows, model].tolist()
        return StepResult(**columns, answers=answers)

    def estimate(self, model: int, queries: Queries, idx: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """What a gateway would expect of a call, never the recorded values of these very
        prompts: the model's mean latency over the table, and its dearest call (the gateway
        bounds a call's cost from above too)."""
        latency, cost = self._expected
        return np.full(len(idx), latency[model]), np.full(len(idx), cost[model])

    @cached_property
    def _expected(self) -> tuple[np.ndarray, np.ndarray]:
        """Per model, once: the mean recorded latency (NaN: none) and the dearest call."""
        t = self.table
        latency = np.array([_known(t.latency_ms[:, m], np.mean) for m in range(t.n_models)])
        cost = np.array([_known(t.cost_usd[:, m], np.max) for m in range(t.n_models)])
        return latency, np.nan_to_num(cost)

    async def acall(self, model: int, queries: Queries, idx: np.ndarray,
                    options: object = None) -> StepResult:
        """The live loop's entry point: the same gather, so replay can stand in for models."""
        return self.call(model, queries, idx)

    def queries(self) -> Queries:
        """All the table's prompts, in order, as queries this backend can answer."""
        t = self.table
        return Queries(t.prompt_ids, t.prompts, t.tasks, self._all_rows)


def _read_only(column: np.ndarray) -> np.ndarray:
    """A view of a table column that nobody downstream can write through."""
    view = column.view()
    view.flags.writeable = False
    return view


def _known(column: np.ndarray, summary: Callable[[np.ndarray], float]) -> float:
    known = column[np.isfinite(column)]
    return float(summary(known)) if known.size else np.nan
