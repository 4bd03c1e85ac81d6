"""Choosing a cascade's thresholds on a calibration split.

- :func:`search_budget`: for a cost budget per query, the per-stage thresholds with the best
  quality (FrugalGPT's search, here exhaustive over a grid).
- :func:`learn_then_test`: for an error target, the cheapest shared threshold whose error
  rate is certified below ``epsilon`` with probability ``1 - delta`` (Learn-Then-Test with
  fixed-sequence testing: thresholds are tested from the most cautious to the most lenient
  with an exact binomial test, and testing stops at the first one not certified, so no
  multiple-testing correction is needed).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from llmtriage.data.table import OutcomeTable
from llmtriage.evaluation.evaluate import gold_quality, replay
from llmtriage.policies.baselines import ThresholdCascade


def outcomes(cascade: ThresholdCascade, table: OutcomeTable) -> tuple[np.ndarray, np.ndarray]:
    """Per query: was the accepted answer right (quality >= 0.5), and what did it cost."""
    trace = replay(cascade, table)
    quality = gold_quality(table, np.arange(table.n_prompts), trace.accepted_model)
    return quality, trace.total("cost_usd")


def search_budget(cascade: ThresholdCascade, table: OutcomeTable, budget: float,
                  grid: np.ndarray | None = None) -> tuple[tuple[float, ...], float, float]:
    """(thresholds, quality, cost) maximising quality with mean cost within ``budget``."""
    grid = np.linspace(0.0, 1.0, 11) if grid is None else grid
    best: tuple[tuple[float, ...], float, float] | None = None
    for combo in itertools.product(grid, repeat=len(cascade.ladder) - 1):
        quality, cost = outcomes(cascade.with_params(threshold=list(combo)), table)
        q, c = float(quality.mean()), float(cost.mean())
        if c <= budget and (best is None or q > best[1] or (q == best[1] and c < best[2])):
            best = (tuple(float(x) for x in combo), q, c)
    if best is None:  # nothing fits: the cheapest behaviour, accept the first answer
        quality, cost = outcomes(cascade.with_params(threshold=-np.inf), table)
        return (-np.inf,) * (len(cascade.ladder) - 1), float(quality.mean()), float(cost.mean())
    return best


@dataclass
class Certified:
    threshold: float
    certified: bool
    calibration_error: float
    calibration_cost: float
    n: int
    epsilon: float
    delta: float


def learn_then_test(cascade: ThresholdCascade, table: OutcomeTable, epsilon: float,
                    delta: float = 0.1, grid: np.ndarray | None = None) -> Certified:
    """The most lenient shared threshold whose error rate is certified <= epsilon."""
    from scipy.stats import binom  # scipy.stats takes 0.3 s to import: only when testing

    grid = np.linspace(1.0, 0.0, 41) if grid is None else np.sort(grid)[::-1]
    chosen: Certified | None = None
    for t in grid:  # cautious first: a high threshold escalates more
        quality, cost = outcomes(cascade.with_params(threshold=float(t)), table)
        errors = int((quality < 0.5).sum())
        p_value = binom.cdf(errors, len(quality), epsilon)  # P(this few | risk = epsilon)
        if p_value > delta:
            break
        chosen = Certified(float(t), True, errors / len(quality), float(cost.mean()),
                           len(quality), epsilon, delta)
    if chosen is None:  # nothing certified: escalate everything to the last rung
        quality, cost = outcomes(cascade.with_params(threshold=np.inf), table)
        chosen = Certified(float("inf"), False, float((quality < 0.5).mean()),
                           float(cost.mean()), len(quality), epsilon, delta)
    return chosen
