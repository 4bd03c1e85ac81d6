"""Choices a policy needs when the user names none, read off a table's training split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmtriage import metrics
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import Policy

#: What `triage ask` and `triage serve` run when no config names a policy: chosen by policy
#: search (``FITTED_OBJECTIVE``) on a recording of the embedded ladder's answers to the 307
#: built-in probes (`triage collect`), and refitted by the command in docs/policies.md.
FITTED_LADDER = Path(__file__).with_name("fitted") / "ladder.npz"
FITTED_OBJECTIVE = "match=0.03,minimize=latency"


def reference_pair(table: OutcomeTable) -> tuple[str, str]:
    """(weak, strong): the cheapest model and the best one, by mean cost and quality."""
    quality = table.quality.mean(axis=0)
    cost = np.nanmean(table.cost_usd, axis=0) if table.has("cost_usd") else np.zeros(len(quality))
    strong = int(np.lexsort((cost, -quality))[0])
    weak = int(np.lexsort((-quality, cost))[0])
    return table.models[weak], table.models[strong]


def mean_cost(table: OutcomeTable) -> np.ndarray:
    """Each model's mean cost per query; where no cost is recorded, the models' order (so
    that the first listed counts as the cheapest)."""
    if not table.has("cost_usd"):
        return np.arange(table.n_models, dtype=np.float64)
    return np.nan_to_num(np.nanmean(table.cost_usd, axis=0))


def near_hull(table: OutcomeTable, keep: int) -> list[int]:
    """The ``keep`` models closest to the cost-quality hull, cheapest first: a model far
    below it is beaten by mixing its neighbours at any trade-off, so searches over sets of
    models start from these (the sets of many models grow combinatorially)."""
    quality = table.quality.mean(axis=0)
    cost = mean_cost(table)
    hx, hy = metrics.upper_hull(cost, quality)
    below = np.interp(cost, hx, hy, right=hy[-1]) - quality
    return sorted(np.argsort(below, kind="stable")[:keep].tolist(), key=lambda i: cost[i])


def pareto_ladder(table: OutcomeTable) -> list[str]:
    """The single models on the cost-quality frontier, cheapest first: a natural cascade."""
    return [table.models[i]
            for i in metrics.pareto_front(mean_cost(table), table.quality.mean(axis=0))]


def models_used(policy: Policy) -> set[str]:
    """The model names a fitted policy may call."""
    used = set(getattr(policy, "models_", ()) or ()) | set(getattr(policy, "ladder", ()) or ())
    for member in getattr(policy, "members_", ()):
        used |= models_used(member)
    return used


def reads_text(policy: Policy) -> bool:
    """Whether a fitted policy decides on the prompt's text (a router's embedder), itself
    or through its router or a searched member."""
    if getattr(policy, "embedder_", None) is not None:
        return True
    inner = [getattr(policy, "router", None), *getattr(policy, "members_", ())]
    return any(reads_text(p) for p in inner if isinstance(p, Policy))


def fitted_default(models: tuple[str, ...] | list[str]) -> Policy | None:
    """The shipped fitted policy, if every model it calls is among ``models``."""
    from llmtriage.policies.artifacts import load

    policy = load(FITTED_LADDER)
    return policy if models_used(policy) <= set(models) else None
