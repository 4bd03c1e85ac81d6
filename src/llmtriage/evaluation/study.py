"""The characterization study behind ``triage report``: every technique family, searched on
the train split, on every data set; in distribution and leave-one-task-out; with the
measured reasons one technique wins where it does.

Per data set, one cross-validation of every candidate (see :mod:`llmtriage.policies.search`)
serves four searched policies, so each technique is shown at its best configuration for
this data, not at a default: routers only, cascades only, cascade routing, and the search
over everything. Beside them: the single models, the oracle and random mixing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from llmtriage.data.table import TEST, TRAIN, OutcomeTable
from llmtriage.evaluation.compare import Comparison, compare
from llmtriage.evaluation.generalisation import held_out_tasks
from llmtriage.evaluation.headline import Headline, headlines
from llmtriage.policies import registry
from llmtriage.policies.base import Policy
from llmtriage.policies.defaults import mean_cost
from llmtriage.policies.search import (
    FAMILIES,
    GROUPS,
    CrossValidated,
    PolicySearch,
    candidates,
    cross_validate,
)
from llmtriage.policies.search.crossval import FOLDS, split_folds


@dataclass
class Reasons:
    """What explains which technique wins on a data set, measured on its evaluated split."""

    #: Median over models of the AUC with which the answer-level signal tells right answers
    #: from wrong ones (the recorded confidence, else two cheap models agreeing); None
    #: where the data has neither.
    signal_auc: float | None
    signal: str
    #: Oracle AIQ minus the zero router's: what any policy could gain at most.
    oracle_headroom: float
    #: The best single model's cost over the cheapest model's.
    price_ratio: float


@dataclass
class SetStudy:
    name: str
    comparison: Comparison
    headlines: list[Headline]
    reasons: Reasons
    #: Per held-out task: the comparison of policies fitted on the other tasks.
    held_out: list[tuple[str, Comparison, list[Headline]]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def winner(self) -> str:
        """The technique with the best AIQ other than the oracle, or the single models when
        none beats their hull."""
        scored = [c for c in self.comparison.curves
                  if c.family not in ("single", "oracle") and c.aiq is not None]
        best = max(scored, key=lambda c: c.aiq, default=None)
        if best is None or best.aiq <= self.comparison.zero_router_aiq + 1e-9:
            return "single models"
        return best.name


def _policies(train: OutcomeTable, outcomes: CrossValidated) -> tuple[list[Policy],
                                                                      list[Policy]]:
    """(every policy to compare, those fitted here already)."""
    context = registry.Context(train.models, train)
    fixed = [*registry.build("single", context), *registry.build("oracle", context)]
    random = registry.build("random", context)
    if random[0].weak != random[0].strong:
        fixed += random
    searched = []
    present = set(outcomes.families)
    for group in GROUPS.values():
        if present & set(group):
            searched.append(PolicySearch(families=group).fit_outcomes(train, outcomes))
    searched.append(PolicySearch().fit_outcomes(train, outcomes))
    return fixed + searched, searched


def _compare(table: OutcomeTable, tick: Callable[[str], None], embedder: str | None
             ) -> tuple[Comparison, int]:
    train = table.split(TRAIN)
    protos = candidates(train, FAMILIES, embedder)
    outcomes = cross_validate(train, protos, progress=tick)
    policies, fitted = _policies(train, outcomes)
    return compare(table, policies, split=TEST, bootstrap=0, fitted=fitted), len(protos)


def reasons(table: OutcomeTable, result: Comparison) -> Reasons:
    from sklearn.metrics import roc_auc_score

    test = table.split(TEST)
    right = test.quality >= 0.5
    scores: np.ndarray | None = None
    signal = "none recorded"
    if test.has("confidence"):
        scores, signal = test.confidence, f"confidence ({table.confidence_signal or 'recorded'})"
    elif test.responses is not None:
        scores, signal = _agreement_scores(test), "agreement of the two cheapest models"
    auc = None
    if scores is not None:
        aucs = []
        for j in range(test.n_models):
            ok = np.isfinite(scores[:, j])
            if ok.sum() > 10 and 0 < right[ok, j].mean() < 1 and np.ptp(scores[ok, j]) > 0:
                aucs.append(roc_auc_score(right[ok, j], scores[ok, j]))
        auc = float(np.median(aucs)) if aucs else None
    singles = result.singles
    best = max(singles, key=lambda p: (p.quality, -p.cost_per_query))
    cheapest = min(p.cost_per_query for p in singles)
    oracle = next(c for c in result.curves if c.family == "oracle")
    return Reasons(auc, signal, float((oracle.aiq or 0.0) - result.zero_router_aiq),
                   float(best.cost_per_query / cheapest) if cheapest > 0
                   else 1.0 if best.cost_per_query == 0 else float("inf"))


def _agreement_scores(table: OutcomeTable) -> np.ndarray:
    """Per model column: 1 where its final answer equals the cheapest other model's."""
    from llmtriage.signals.agreement import answer_keys

    keys = answer_keys(table)
    order = np.argsort(mean_cost(table), kind="stable")
    out = np.full(table.quality.shape, np.nan)
    for j in range(table.n_models):
        other = next(k for k in order if k != j)
        out[:, j] = (keys[j] == keys[other]) & (keys[j] != "")
    return out


def study(
    sets: list[tuple[str, OutcomeTable]],
    tick: Callable[[str], None] | None = None,
    held_out: bool = True,
    embedder: str | None = None,
) -> list[SetStudy]:
    """Run the standard study on each (name, table); leave-one-task-out on those with
    several tasks when ``held_out``; routers read ``embedder``'s features (default
    MiniLM)."""
    tick = tick or (lambda _label: None)
    for _, table in sets:  # a set too small to study fails before the others take minutes
        for part in [table, *(split for _, split in _held_out(table, held_out))]:
            split_folds(part.split(TRAIN), FOLDS)
    out = []
    for name, table in sets:
        started = time.perf_counter()
        result, _ = _compare(table, tick, embedder)
        result.dataset = name
        one = SetStudy(name, result, headlines(result), reasons(table, result))
        for task, split in _held_out(table, held_out):
            loto, _ = _compare(split, tick, embedder)
            loto.dataset = f"{name}, held-out task {task}"
            one.held_out.append((task, loto, headlines(loto)))
        one.seconds = time.perf_counter() - started
        out.append(one)
    return out


def count_candidates(table: OutcomeTable, held_out: bool = True) -> int:
    """How many candidates the study cross-validates on a table (for a progress bar)."""
    return len(candidates(table.split(TRAIN), FAMILIES)) + sum(
        len(candidates(split.split(TRAIN), FAMILIES)) for _, split in _held_out(table, held_out))


def _held_out(table: OutcomeTable, held_out: bool) -> Iterable[tuple[str, OutcomeTable]]:
    """Each task of a multi-task table with that task held out, when they are asked for."""
    return held_out_tasks(table) if held_out and len(set(table.tasks.tolist())) > 1 else []
