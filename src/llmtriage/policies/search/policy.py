"""The policy search as one policy object: the kind ``search``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from llmtriage import metrics
from llmtriage.data.errors import DataError
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import Decision, Policy, State
from llmtriage.policies.defaults import mean_cost
from llmtriage.policies.params import Count, NonNegative
from llmtriage.policies.search.candidates import FAMILIES, GROUPS, candidates
from llmtriage.policies.search.crossval import FOLDS, CrossValidated, cross_validate


class PolicySearch(Policy):
    """The search's choice at every budget on the cross-validated frontier.

    Fitting runs the search; each frontier point's policy is refitted on the whole split and
    kept. ``budget`` (USD per query; None: the best quality) picks the member that serves,
    so sweeping it traces the searched policy's curve, and a saved one serves its point.
    """

    name = "search"
    requires_fit = True
    tradeoff = "budget"

    def __init__(self, budget: NonNegative | None = None,
                 families: Sequence[str] = FAMILIES, folds: Count | Literal["task"] = FOLDS,
                 embedder: str | None = None) -> None:
        """``families``: what is searched (:data:`FAMILIES`); ``folds``: random folds, or
        "task" to hold each task out in turn (see ``cross_validate``); ``embedder``: the
        routers' query features by name (default MiniLM; ``hashing`` is instant)."""
        self.budget = budget
        self.families = (families,) if isinstance(families, str) else tuple(families)
        self.folds = folds
        self.embedder = embedder

    def fit(self, table: OutcomeTable) -> PolicySearch:
        outcomes = cross_validate(table, candidates(table, self.families, self.embedder),
                                  self.folds)
        return self.fit_outcomes(table, outcomes)

    def fit_outcomes(self, table: OutcomeTable, outcomes: CrossValidated) -> PolicySearch:
        """Fit from a cross-validation already run on ``table`` (of these families or
        more): a study compares several family groups from one run."""
        rows = [r for r, f in enumerate(outcomes.families) if f in self.families]
        if not rows:
            raise DataError(f"{table.name} supports none of the searched families "
                            f"{', '.join(self.families)}")
        mine = outcomes.subset(rows)
        front = mine.frontier()
        self.members_ = [outcomes.fitted_policy(rows[row], table) for row in front.tolist()]
        self.member_cost_ = mine.mean("cost_usd")[front].astype(np.float64)
        self.member_quality_ = mine.mean("quality")[front].astype(np.float64)
        #: Where the search's time went: seconds of cross-validation per family.
        self.seconds_ = {k: v for k, v in outcomes.seconds.items() if k in self.families}
        return self

    @property
    def curve_name(self) -> str:
        if set(self.families) >= set(FAMILIES):
            return self.name
        group = next((g for g, f in GROUPS.items() if set(f) == set(self.families)), None)
        return f"{self.name}({group or '+'.join(self.families)})"

    def member(self) -> Policy:
        if self.budget is None:
            return self.members_[int(np.argmax(self.member_quality_))]
        ok = self.member_cost_ <= self.budget * (1 + 1e-9)
        if not ok.any():
            return self.members_[0]
        return self.members_[int(np.argmax(np.where(ok, self.member_quality_, -np.inf)))]

    @property
    def reads_answers(self) -> bool:  # type: ignore[override]
        return any(m.reads_answers for m in getattr(self, "members_", ()))

    @property
    def signal(self) -> str | None:  # type: ignore[override]
        return self.member().signal if hasattr(self, "members_") else None

    def live_signal(self):  # noqa: ANN201 - the serving member's
        return self.member().live_signal()

    def own_cost(self, model: str) -> tuple[float, float, float] | None:
        return self.member().own_cost(model)

    def grid(self, table: OutcomeTable) -> list[float]:
        return self.member_cost_.tolist()

    @property
    def label(self) -> str:
        chosen = self.member().label if hasattr(self, "members_") else "?"
        return f"{self.curve_name}[{chosen}]"

    def step(self, state: State) -> Decision:
        return self.member().step(state)


def best_ladder(train: OutcomeTable, folds: int = FOLDS) -> list[str]:
    """The calibrated cascade ladder with the best cross-validated AIQ over its thresholds
    (over the single models' cost range): the default ladder wherever none is named."""
    protos = candidates(train, ("calibrated-cascade",))
    if not protos:
        return list(train.models[:1])
    outcomes = cross_validate(train, protos, folds)
    cost = mean_cost(train)
    span = (float(cost.min()), float(cost.max()))
    q, c = outcomes.mean("quality"), outcomes.mean("cost_usd")
    index = np.array([i for i, _ in outcomes.settings])
    scores = [metrics.aiq(c[index == i], q[index == i], span) for i in range(len(protos))]
    return list(protos[int(np.argmax(scores))].ladder)
