"""A backend that answers from a recorded outcome table: a call is an array gather.

It is how ``triage bench`` evaluates policies, and how the live code path is tested
deterministically.
"""

from __future__ import annotations

import numpy as np

from llmtriage.backends.base import STEP_FIELDS, Queries, StepResult
from llmtriage.data.table import OutcomeTable


class ReplayBackend:
    def __init__(self, table: OutcomeTable, with_answers: bool = False) -> None:
        self.table = table
        self.models = table.models
        self.with_answers = with_answers and table.responses is not None
        self._recorded = [f for f in STEP_FIELDS if table.has(f)]

    def call(self, model: int, queries: Queries, idx: np.ndarray) -> StepResult:
        if queries.rows is None:
            raise ValueError("a replay backend needs queries built from its table (rows)")
        rows = queries.rows[idx]
        t = self.table
        whole = len(rows) == t.n_prompts and _is_arange(rows)
        columns = {
            f: getattr(t, f)[:, model] if whole else getattr(t, f)[:, model][rows]
            for f in self._recorded
        }
        answers = None
        if self.with_answers:
            answers = t.responses[rows, model].tolist()
        return StepResult(**columns, answers=answers)

    def queries(self) -> Queries:
        return Queries.from_table(self.table)


def _is_arange(rows: np.ndarray) -> bool:
    return bool((np.diff(rows) == 1).all())
