"""Out-of-fold outcomes of every candidate at every setting, by the loop that serves."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from llmtriage import metrics
from llmtriage.backends.replay import ReplayBackend
from llmtriage.data.errors import DataError
from llmtriage.data.splits import kfold, same_text
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import Policy
from llmtriage.policies.loop import run_policy

#: How many random folds the search cross-validates on unless told otherwise: three keep
#: a third of a small train split out of each fit while costing three fits per candidate.
FOLDS = 3

#: The outcomes recorded per prompt, where the table has them.
OUTCOMES = ("quality", "cost_usd", "latency_ms", "energy_j")


@dataclass
class CrossValidated:
    """Out-of-fold outcomes of every (candidate, setting): one row per setting, one column
    per training prompt, for each of :data:`OUTCOMES` that the table records."""

    labels: list[str]
    families: list[str]
    #: (index into ``prototypes``, trade-off value or None) per row.
    settings: list[tuple[int, float | None]]
    prototypes: list[Policy]
    values: dict[str, np.ndarray]
    seconds: dict[str, float] = field(default_factory=dict)
    #: Each prototype fitted on the whole split (what a chosen setting serves), by index.
    fitted: dict[int, Policy] = field(default_factory=dict)

    def fitted_policy(self, row: int, table: OutcomeTable) -> Policy:
        """The row's candidate fitted on the whole split, at its setting."""
        index, value = self.settings[row]
        if index not in self.fitted:
            self.fitted[index] = _clone(self.prototypes[index]).fit(table)
        return _at(self.fitted[index], value)

    def mean(self, outcome: str) -> np.ndarray:
        return self.values[outcome].mean(axis=1)

    def policy(self, row: int) -> Policy:
        """The unfitted candidate of a row, with its setting."""
        index, value = self.settings[row]
        proto = self.prototypes[index]
        return proto.with_params(**{proto.tradeoff: value}) if value is not None else proto

    def subset(self, rows: list[int]) -> CrossValidated:
        """The same cross-validation restricted to some rows (settings)."""
        return CrossValidated([self.labels[r] for r in rows], [self.families[r] for r in rows],
                              [self.settings[r] for r in rows], self.prototypes,
                              {k: v[rows] for k, v in self.values.items()}, self.seconds,
                              self.fitted)

    def frontier(self) -> np.ndarray:
        """Rows on the cross-validated cost-quality Pareto front, cheapest first."""
        return metrics.pareto_front(self.mean("cost_usd"), self.mean("quality"))




def replay_outcomes(policy: Policy, table: OutcomeTable) -> dict[str, np.ndarray]:
    """Per prompt: the accepted answer's recorded quality and the resources spent (NaN
    where the table records none)."""
    backend = ReplayBackend(table, with_answers=policy.reads_answers,
                            fields=("confidence", "cost_usd", "latency_ms", "energy_j"))
    trace = run_policy(policy, backend, backend.queries())
    rows = np.arange(table.n_prompts)
    out = {"quality": table.quality[rows, trace.accepted_model]}
    for name in OUTCOMES[1:]:
        if table.has(name):
            out[name] = trace.total(name)
    return out


def cross_validate(
    train: OutcomeTable,
    policies: Sequence[Policy],
    folds: int | str = FOLDS,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> CrossValidated:
    """Out-of-fold outcomes of every policy at every setting of its trade-off.

    ``folds``: a number of random folds, or "task": each task held out in turn (fitted on
    the others), so that the outcomes measure how a candidate does on a task it has not
    seen, and the choice favours what travels across tasks over what wins on the mix."""
    splits = split_folds(train, folds, seed)
    order = np.concatenate([held for _, held in splits])
    parts = [(train.take(kept), train.take(held)) for kept, held in splits]
    labels, families, settings = [], [], []
    values: dict[str, list[np.ndarray]] = {}
    seconds: dict[str, float] = {}
    fitted: dict[int, Policy] = {}
    for index, proto in enumerate(policies):
        started = time.perf_counter()
        rows, fitted[index] = _candidate_outcomes(proto, train, parts, order)
        seconds[proto.name] = seconds.get(proto.name, 0.0) + time.perf_counter() - started
        for value, outcome in rows:
            labels.append(_describe(_at(proto, value)))
            families.append(proto.name)
            settings.append((index, value))
            for k, v in outcome.items():
                values.setdefault(k, []).append(v.astype(np.float32))
        if progress:
            progress(proto.curve_name)
    stacked = {k: np.vstack(v) for k, v in values.items() if len(v) == len(labels)}
    return CrossValidated(labels, families, settings, list(policies), stacked, seconds,
                          fitted)


def split_folds(train: OutcomeTable, folds: int | str, seed: int = 0
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kept, held) rows of each fold: random, or one task held out per fold."""
    if folds == "task":
        tasks = sorted(set(train.tasks.tolist()))
        if len(tasks) < 2:
            raise DataError(f"{train.name} has one task; task folds need two or more")
        return [(np.flatnonzero(train.tasks != t), np.flatnonzero(train.tasks == t))
                for t in tasks]
    if not isinstance(folds, int) or folds < 2:
        raise DataError(f"folds must be a number >= 2 or 'task', not {folds!r}")
    if train.n_prompts < 2 * folds:
        raise DataError(f"{train.name} has {train.n_prompts} prompt(s): {folds}-fold "
                        f"cross-validation needs at least {2 * folds} (and a choice worth "
                        "trusting many more)")
    return list(kfold(train.n_prompts, folds, seed, groups=same_text(train.prompts)))


def _candidate_outcomes(proto: Policy, train: OutcomeTable,
                        parts: list[tuple[OutcomeTable, OutcomeTable]], order: np.ndarray
                        ) -> tuple[list[tuple[float | None, dict[str, np.ndarray]]], Policy]:
    """Per setting, the out-of-fold outcomes; and the candidate fitted on all of ``train``.

    The whole-split fit comes first: it is what a chosen setting serves, its trade-off grid
    is swept in every fold, and the hyperparameter it picked by its own inner
    cross-validation (a router's ``"auto"``) is reused in the folds instead of being
    re-searched three times over."""
    full = proto.fit(train) if not proto.requires_fit else _clone(proto).fit(train)
    grid = list(full.grid(train)) if full.tradeoff else [None]
    if not proto.requires_fit:  # nothing learned: the whole split is out of fold
        return [(v, {k: a[order] for k, a in replay_outcomes(_at(full, v), train).items()})
                for v in grid], full
    per_fold = []
    for kept, held in parts:
        fitted = _clone(proto, like=full).fit(kept)
        per_fold.append([replay_outcomes(_at(fitted, v), held) for v in grid])
    return [(v, {k: np.concatenate([fold[i][k] for fold in per_fold])
                 for k in per_fold[0][i]}) for i, v in enumerate(grid)], full


def _describe(policy: Policy) -> str:
    """A label that tells candidates of one kind apart (a cascade by its ladder)."""
    ladder = getattr(policy, "ladder", None)
    if ladder and policy.name == "calibrated-cascade":
        return f"{policy.label}({'>'.join(ladder)})"
    return policy.label


def _at(policy: Policy, value: float | None) -> Policy:
    return policy if value is None else policy.with_params(**{policy.tradeoff: value})


def _clone(policy: Policy, like: Policy | None = None) -> Policy:
    """A fresh unfitted copy with the same parameters (and features, for routers); with
    ``like`` (the same candidate, fitted), an ``"auto"`` hyperparameter set to its choice."""
    clone = type(policy).__new__(type(policy))
    clone.__dict__.update(policy.params())
    embedder = getattr(policy, "embedder_", None)
    if embedder is not None:
        clone.embedder_ = embedder
    auto = getattr(policy, "auto_param", "")
    if like is not None and auto and getattr(policy, auto) == "auto":
        setattr(clone, auto, like.chosen_)
    if hasattr(policy, "router"):  # cascade routing: a fresh router inside
        clone.router = _clone(policy.router, like.router if like is not None else None)
    return clone
