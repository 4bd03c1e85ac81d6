"""Pick a router's trade-off for a target, on held-out data, and say how sure that is.

Targets: a share of queries sent to the strong (dearest) model, a cost per query, or a
quality level. The lam that meets the target on the held-out table is chosen; the achieved
value is reported with a 95% bootstrap interval over the held-out queries, because a target
met on 400 prompts is met on tomorrow's traffic only up to that uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmtriage.data.table import OutcomeTable
from llmtriage.evaluation.evaluate import (
    bootstrap_means,
    gold_quality,
    refuse_blind_replay,
    replay,
    sweep,
)
from llmtriage.policies.routers.base import QualityRouter

TARGETS = ("strong_share", "cost", "quality")


@dataclass
class TargetFit:
    target: str
    wanted: float
    lam: float
    achieved: float
    achieved_ci: tuple[float, float]
    quality: float
    quality_ci: tuple[float, float]
    cost_per_query: float
    met: bool
    n_queries: int


def meet_target(router: QualityRouter, table: OutcomeTable, target: str, value: float,
              bootstrap: int = 1000, seed: int = 0) -> TargetFit:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    if not np.isfinite(value) or value < 0 or (target != "cost" and value > 1):
        kind = "a USD cost per query, 0 or more" if target == "cost" else "between 0 and 1"
        raise ValueError(f"a {target} target is {kind}, not {value}")
    refuse_blind_replay(table, [router])
    strong = int(np.argmax(router.cost_))
    spread = float(router.cost_.max() - router.cost_.min()) or 1.0
    lams = [0.0, *(np.geomspace(1e-3, 1e3, 80) / spread).tolist()]
    points = sweep(router, lams, table)
    share = np.array([p.answer_share[router.models_[strong]] for p in points])
    quality = np.array([p.quality for p in points])
    cost = np.array([p.cost_per_query for p in points])
    if target == "quality":
        ok = quality >= value
        pick = int(np.where(ok, cost, np.inf).argmin()) if ok.any() else int(quality.argmax())
    else:
        metric = share if target == "strong_share" else cost
        ok = metric <= value
        pick = int(np.where(ok, quality, -np.inf).argmax()) if ok.any() else int(metric.argmin())
    chosen = router.with_params(lam=lams[pick])
    trace = replay(chosen, table)
    per_query = {
        "quality": gold_quality(table, np.arange(table.n_prompts), trace.accepted_model),
        "cost": trace.total("cost_usd"),
        "strong_share": (trace.accepted_model == table.model_index(router.models_[strong]))
        .astype(float),
    }
    ci = bootstrap_means(per_query, bootstrap, seed)
    achieved = float(per_query[target].mean())
    met = achieved >= value if target == "quality" else achieved <= value
    return TargetFit(target, value, float(lams[pick]), achieved, ci.get(target, (achieved,) * 2),
                       float(per_query["quality"].mean()), ci.get("quality", (np.nan,) * 2),
                       float(per_query["cost"].mean()), bool(met), table.n_prompts)
