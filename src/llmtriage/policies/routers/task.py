"""Route by the query's task: each model's mean quality on the task the query belongs to.

Where a table holds several tasks and models' strengths differ by task (one model for
maths, another for trivia), the task alone says much of what an embedding router learns
from the prompt, with far less variance: a mean per task and model instead of a map from
prompt to quality. It reads no prompt text. A task seen on few rows leans on the model's
mean over every task, and a task not seen (or none, as a live query without an
``x-triage-task`` header) gets that mean alone: the best model on the whole mix.
"""

from __future__ import annotations

import numpy as np

from llmtriage.backends.base import Queries
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.params import Finite, NonNegative
from llmtriage.policies.routers.base import QualityRouter


class TaskRouter(QualityRouter):
    name = "task-mean"

    def __init__(self, prior_rows: NonNegative = 10.0, lam: NonNegative = 0.0,
                 target: Finite | None = None) -> None:
        """``prior_rows``: a task of ``n`` rows is predicted at ``(n * its mean +
        prior_rows * the overall mean) / (n + prior_rows)`` per model."""
        super().__init__(lam, target)
        self.prior_rows = prior_rows

    def fit(self, table: OutcomeTable, embedder: object = None) -> TaskRouter:
        self.models_ = table.models
        self.cost_ = np.nan_to_num(table.cost_usd, nan=0.0).mean(axis=0)
        self.overall_ = table.quality.mean(axis=0)
        names, _, counts, sums = _by_task(table)
        self.tasks_ = names.astype(object)
        self.task_quality_ = (sums + self.prior_rows * self.overall_) / (
            counts[:, None] + self.prior_rows)
        return self

    def predict_quality(self, queries: Queries | np.ndarray) -> np.ndarray:
        """Per query, each model's mean on its task (prompt texts alone carry no task: the
        overall means)."""
        n = len(queries.prompts) if isinstance(queries, Queries) else len(queries)
        out = np.tile(self.overall_, (n, 1))
        if isinstance(queries, Queries):
            tasks = queries.tasks.astype(str)
            known = {t: i for i, t in enumerate(self.tasks_.tolist())}
            for task in np.unique(tasks).tolist():
                if task in known:
                    out[tasks == task] = self.task_quality_[known[task]]
        return out

    def out_of_fold(self, table: OutcomeTable, folds: int = 5) -> np.ndarray:
        """Each query's prediction from the task means without its own row (leave one out,
        exact): its own outcome in the mean would flatter the router's view of itself."""
        self.fit(table)
        _, codes, counts, sums = _by_task(table)
        others = sums[codes] - table.quality  # each task's sum without the row itself
        rest = counts[codes, None] - 1 + self.prior_rows  # its other rows, and the prior
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(rest > 0, (others + self.prior_rows * self.overall_) / rest,
                            self.overall_)


def _by_task(table: OutcomeTable) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The table's tasks (sorted), each row's task index, each task's rows and the sum of
    each model's quality over them."""
    names, codes, counts = np.unique(table.tasks.astype(str), return_inverse=True,
                                     return_counts=True)
    sums = np.zeros((len(names), table.n_models))
    np.add.at(sums, codes, table.quality)
    return names, codes, counts, sums
