"""The two numbers a user reads first, with how sure they are.

- **Gap recovered**: the share of the AIQ gap between the zero router (the single models'
  hull) and the oracle that a policy closes. 0 is "no better than picking models by hand",
  1 is "as good as knowing every answer in advance".
- **Cost to match**: the least mean cost, as a share of the best single model's, at which
  the policy's cost-quality hull reaches that model's quality ("never" when it does not).

Both come with 95% bootstrap intervals over the evaluated queries: every curve, the single
models and the oracle are resampled together, so the interval is of the comparison, not of
one curve alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmtriage import metrics
from llmtriage.evaluation.compare import Comparison, PolicyCurve

RESAMPLES = 200


@dataclass(frozen=True)
class Headline:
    policy: str
    gap_recovered: float
    gap_ci: tuple[float, float]
    #: Least cost reaching the best single model's quality, as a share of its cost (inf:
    #: never).
    cost_to_match: float
    cost_ci: tuple[float, float]
    best_single: str

    def record(self) -> dict:
        return {"policy": self.policy, "gap_recovered": self.gap_recovered,
                "gap_ci": list(self.gap_ci), "cost_to_match": self.cost_to_match,
                "cost_ci": list(self.cost_ci), "best_single": self.best_single}


def cost_to_reach(cost: np.ndarray, quality: np.ndarray, target: float) -> float:
    """The least cost at which the non-decreasing hull of the points reaches ``target``."""
    hx, hy = metrics.upper_hull(cost, quality)
    return metrics.first_reach(hx, hy, target, unreached=float("inf"))


def _stack(curve: PolicyCurve, key: str) -> np.ndarray:
    return np.vstack([p.outcomes[key] for p in curve.points])


def headlines(c: Comparison, resamples: int = RESAMPLES, seed: int = 0) -> list[Headline]:
    """Gap recovered and cost to match for every curve other than the singles and oracle."""
    singles = [cv for cv in c.curves if cv.family == "single"]
    oracle = next((cv for cv in c.curves if cv.family == "oracle"), None)
    # A curve, not one operating point: AIQ of a lone point over the whole cost range
    # (nothing below its cost) says nothing about it.
    others = [cv for cv in c.curves
              if cv.family not in ("single", "oracle") and len(cv.points) > 1]
    if not singles or oracle is None or not others \
            or any(not p.outcomes for cv in c.curves for p in cv.points):
        return []
    curves = [*singles, oracle, *others]
    quality = [_stack(cv, "quality") for cv in curves]
    cost = [_stack(cv, "cost") for cv in curves]
    n = quality[0].shape[1]
    rng = np.random.default_rng(seed)
    draws = [np.arange(n)] + [rng.integers(0, n, n) for _ in range(resamples)]
    gaps = np.empty((len(draws), len(others)))
    matches = np.empty((len(draws), len(others)))
    n_single = len(singles)
    best = int(np.argmax([q.mean() for q in quality[:n_single]]))
    for d, idx in enumerate(draws):
        q = [x[:, idx].mean(axis=1) for x in quality]
        k = [x[:, idx].mean(axis=1) for x in cost]
        single_q, single_c = np.concatenate(q[:n_single]), np.concatenate(k[:n_single])
        span = (float(single_c.min()), float(single_c.max()))
        zero = metrics.aiq(single_c, single_q, span)
        top = metrics.aiq(k[n_single], q[n_single], span) - zero
        for j in range(len(others)):
            qj, kj = q[n_single + 1 + j], k[n_single + 1 + j]
            aiq = metrics.aiq(kj, qj, span)
            gaps[d, j] = (aiq - zero) / top if top > 0 else np.nan
            reach = cost_to_reach(kj, qj, float(single_q[best]))
            matches[d, j] = reach / single_c[best] if single_c[best] > 0 else np.nan
    out = []
    for j, cv in enumerate(others):
        out.append(Headline(cv.name, float(gaps[0, j]), _interval(gaps[1:, j]),
                            float(matches[0, j]), _interval(matches[1:, j]),
                            singles[best].name))
    return out


def _interval(values: np.ndarray) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    # Picked, not interpolated: "never" (inf) is a value a resample can take.
    return (float(np.quantile(values, 0.025, method="inverted_cdf")),
            float(np.quantile(values, 0.975, method="inverted_cdf")))


def describe(h: Headline) -> str:
    """One line: '12.3% of the gap to the oracle [8.1%, 16.0%]; ...'."""
    if np.isnan(h.gap_recovered):
        gap = "no gap to recover (the oracle does no better than the single models)"
    else:
        gap = f"{h.gap_recovered:.1%} of the zero-router-to-oracle gap [{h.gap_ci[0]:.1%}, " \
              f"{h.gap_ci[1]:.1%}]"
    if np.isnan(h.cost_to_match):  # the best single model costs nothing
        match = f"{h.best_single} costs nothing here, so no share of its cost"
    elif np.isinf(h.cost_to_match):
        match = f"never reaches {h.best_single}'s quality"
        if np.isfinite(h.cost_ci[0]):
            match += f" (in some resamples from {h.cost_ci[0]:.0%} of its cost)"
    else:
        hi = "never" if np.isinf(h.cost_ci[1]) else f"{h.cost_ci[1]:.0%}"
        match = (f"reaches {h.best_single}'s quality at {h.cost_to_match:.0%} of its cost "
                 f"[{h.cost_ci[0]:.0%}, {hi}]")
    return f"{h.policy}: {gap}; {match}"


def resource_aiq(c: Comparison, axis: str) -> dict[str, float]:
    """AIQ with ``axis`` ("latency_ms" or "energy_j") in place of cost, over the single
    models' range of it, per curve plus "zero router"; empty where it is not recorded."""
    singles = c.singles
    if not singles or any(getattr(p, axis) is None for p in singles):
        return {}
    x = np.array([getattr(p, axis) for p in singles])
    span = (float(x.min()), float(x.max()))
    out = {"zero router": metrics.aiq(x, np.array([p.quality for p in singles]), span)}
    for curve in c.curves:
        if curve.family != "single" and all(getattr(p, axis) is not None for p in curve.points):
            out[curve.name] = metrics.aiq(np.array([getattr(p, axis) for p in curve.points]),
                                          np.array([p.quality for p in curve.points]), span)
    return out
