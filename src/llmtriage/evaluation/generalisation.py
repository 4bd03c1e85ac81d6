"""Generalisation measured, not assumed: leave one task out.

A policy fitted on a mix of tasks meets, in production, traffic whose mix differs; the
honest test of that is to fit on every task but one and evaluate on the one held out,
which the policy has never seen a prompt of. Reported beside the in-distribution figure.
Where a table records no task, clusters of its prompts stand in for tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from llmtriage.data.errors import DataError
from llmtriage.data.table import TEST, TRAIN, OutcomeTable
from llmtriage.evaluation.compare import Comparison, compare
from llmtriage.policies.base import Policy
from llmtriage.signals.embedder import Embedder, default_embedder


def held_out_tasks(table: OutcomeTable, groups: np.ndarray | None = None
                   ) -> Iterator[tuple[str, OutcomeTable]]:
    """Per task (or per label of ``groups``, one per prompt): the table re-split so that
    every prompt of the others is train and every prompt of this one is test."""
    groups = table.tasks if groups is None else np.asarray(groups, dtype=object)
    tasks = sorted(set(groups.tolist()))
    if len(tasks) < 2:
        raise DataError(f"{table.name} has one task ({tasks}); leave-one-task-out needs two")
    for task in tasks:
        held = groups == task
        yield task, table.with_splits(np.where(held, TEST, TRAIN).astype(object))


def leave_one_task_out(
    table: OutcomeTable,
    policies: Callable[[], Sequence[Policy]],
    *,
    bootstrap: int = 0,
    groups: np.ndarray | None = None,
) -> Iterator[tuple[str, Comparison]]:
    """Per task (or label of ``groups``): fit fresh ``policies()`` on every prompt of the
    others, compare them on every prompt of this one."""
    for task, split in held_out_tasks(table, groups):
        result = compare(split, list(policies()), split=TEST, bootstrap=bootstrap)
        result.dataset = f"{table.name} (held-out task {task})"
        yield task, result


def prompt_clusters(table: OutcomeTable, clusters: int = 4, seed: int = 0,
                    embedder: Embedder | None = None) -> np.ndarray:
    """Per prompt, ``cluster-<i>``: k-means on the query embedding (MiniLM by default).

    For a table that records no task but mixes several (LLMRouter's prompts come from
    maths, logic-puzzle, science and commonsense sets): a held-out cluster is prompts unlike
    any the policy was fitted on, as a held-out task is. Clusters are numbered largest
    first."""
    from sklearn.cluster import KMeans

    if table.n_prompts < 2 * clusters:
        raise DataError(f"{table.name} has {table.n_prompts} prompts: too few for "
                        f"{clusters} clusters")
    features = (embedder or default_embedder()).embed([str(t) for t in table.prompts])
    labels = KMeans(clusters, n_init=10, random_state=seed).fit_predict(features)
    by_size = np.argsort(-np.bincount(labels, minlength=clusters), kind="stable")
    rank = np.empty(clusters, dtype=np.int64)
    rank[by_size] = np.arange(clusters)
    return np.array([f"cluster-{r}" for r in rank[labels]], dtype=object)
