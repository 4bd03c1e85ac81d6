"""Generalisation measured, not assumed: leave one task out.

A policy fitted on a mix of tasks meets, in production, traffic whose mix differs; the
honest test of that is to fit on every task but one and evaluate on the one held out,
which the policy has never seen a prompt of. Reported beside the in-distribution figure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from llmtriage.data.errors import DataError
from llmtriage.data.table import TEST, TRAIN, OutcomeTable
from llmtriage.evaluation.compare import Comparison, compare
from llmtriage.policies.base import Policy


def held_out_tasks(table: OutcomeTable) -> Iterator[tuple[str, OutcomeTable]]:
    """Per task: the table re-split so that every prompt of the other tasks is train and
    every prompt of this one is test."""
    tasks = sorted(set(table.tasks.tolist()))
    if len(tasks) < 2:
        raise DataError(f"{table.name} has one task ({tasks}); leave-one-task-out needs two")
    for task in tasks:
        held = table.tasks == task
        yield task, table.with_splits(np.where(held, TEST, TRAIN).astype(object))


def leave_one_task_out(
    table: OutcomeTable,
    policies: Callable[[], Sequence[Policy]],
    *,
    bootstrap: int = 0,
) -> Iterator[tuple[str, Comparison]]:
    """Per task: fit fresh ``policies()`` on every prompt of the other tasks, compare them
    on every prompt of this one."""
    for task, split in held_out_tasks(table):
        result = compare(split, list(policies()), split=TEST, bootstrap=bootstrap)
        result.dataset = f"{table.name} (held-out task {task})"
        yield task, result
