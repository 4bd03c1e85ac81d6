"""The search's answer: the objective's pick, refitted, with what it beat."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import Policy
from llmtriage.policies.search.candidates import FAMILIES, candidates
from llmtriage.policies.search.crossval import FOLDS, CrossValidated, cross_validate
from llmtriage.policies.search.objective import RESOURCES, Objective


@dataclass
class SearchResult:
    objective: Objective
    chosen: int
    met: bool
    policy: Policy
    outcomes: CrossValidated
    folds: int | str

    def estimate(self) -> dict[str, float]:
        return {k: float(v.mean()) for k, v in
                ((k, self.outcomes.values[k][self.chosen]) for k in self.outcomes.values)}

    def alternatives(self, top: int = 10) -> list[dict]:
        """The best setting of each other candidate under the objective, best first, with
        its cross-validated outcomes: what the search rejected and by how much."""
        rows = []
        # Qualified among all candidates (a match target and a guarantee's error budget are
        # set by the whole search, not by one candidate).
        qualified = self.objective.qualifies(self.outcomes)
        for index, proto in enumerate(self.outcomes.prototypes):
            mine = [r for r, (i, _) in enumerate(self.outcomes.settings) if i == index]
            if not mine:
                continue
            pick, met = self.objective.pick(self.outcomes.subset(mine), qualified[mine])
            row = mine[pick]
            rows.append({"policy": self.outcomes.labels[row], "family": proto.name,
                         "meets": met, "chosen": row == self.chosen,
                         **{k: float(v[row].mean()) for k, v in self.outcomes.values.items()}})
        # Ties fall as ``Objective.pick`` breaks them, so the chosen row leads its ties.
        spent = "latency_ms" if self.objective.kind == "latency" else "cost_usd"
        key = {"lam": lambda r: -(r["quality"] - self.objective.value * r["cost_usd"]),
               "quality": lambda r: (not r["meets"],
                                     r.get(RESOURCES[self.objective.minimize], 0.0),
                                     -r["quality"])}
        key["match"] = key["quality"]
        rows.sort(key=key.get(self.objective.kind,
                              lambda r: (not r["meets"], -r["quality"], r.get(spent, 0.0))))
        return rows[:top]


def search(
    train: OutcomeTable,
    objective: Objective,
    families: Sequence[str] = FAMILIES,
    folds: int | str = FOLDS,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    embedder: str | None = None,
) -> SearchResult:
    """Cross-validate every candidate on ``train``, choose by ``objective``, refit it."""
    objective.check(train)
    outcomes = cross_validate(train, candidates(train, families, embedder), folds, seed,
                              progress)
    return choose(train, objective, outcomes, folds)


def choose(train: OutcomeTable, objective: Objective, outcomes: CrossValidated,
           folds: int | str = FOLDS) -> SearchResult:
    """The objective's pick among cross-validated outcomes, refitted on all of ``train``."""
    chosen, met = objective.choose(outcomes)
    return SearchResult(objective, chosen, met, outcomes.fitted_policy(chosen, train),
                        outcomes, folds)
