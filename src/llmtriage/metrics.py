"""The field's summary metrics of cost-quality trade-offs, as plain functions of points.

- APGR and CPT (RouteLLM, Ong et al. 2024): quality against the share of calls to the strong
  model of a strong/weak pair.
- AIQ (RouterBench, Hu et al. 2024): area under the non-decreasing convex hull of cost vs
  quality, averaged over a cost range.
- The Pareto frontier over any set of (cost, quality) points.
- RouterArena's accuracy-cost score (Lu et al. 2025) and an inference efficiency score.
"""

from __future__ import annotations

import numpy as np


def _as_curve(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by x; at equal x keep the best y (a policy can always take its best setting)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    order = np.lexsort((-y, x))
    x, y = x[order], y[order]
    keep = np.ones(len(x), dtype=bool)
    keep[1:] = x[1:] != x[:-1]
    return x[keep], y[keep]


# -- RouteLLM ----------------------------------------------------------------------------


def pgr(quality: np.ndarray | float, weak: float, strong: float) -> np.ndarray:
    """Performance gap recovered: 0 at the weak model's quality, 1 at the strong one's."""
    gap = strong - weak
    if gap == 0:
        raise ValueError("PGR is undefined when the strong and weak models score the same")
    return (np.asarray(quality, dtype=np.float64) - weak) / gap


def _anchored_curve(
    strong_share: np.ndarray, quality: np.ndarray, weak: float, strong: float
) -> tuple[np.ndarray, np.ndarray]:
    """PGR against strong-call share, completed by the all-weak (0, 0) and all-strong
    (1, 1) points, which every router reaches at its extreme settings (and which mixing
    with either model reaches from any point)."""
    x, y = _as_curve(strong_share, pgr(quality, weak, strong))
    if x.size == 0 or x[0] > 0:
        x, y = np.r_[0.0, x], np.r_[0.0, y]
    if x[-1] < 1:
        x, y = np.r_[x, 1.0], np.r_[y, 1.0]
    return x, y


def apgr(strong_share: np.ndarray, quality: np.ndarray, weak: float, strong: float) -> float:
    """Area under PGR against the strong-call share on [0, 1].

    Integrated with the trapezoid rule over the anchored curve, as RouteLLM does over its
    threshold sweep. A random router scores 0.5.
    """
    x, y = _anchored_curve(strong_share, quality, weak, strong)
    return float(np.trapezoid(y, x))


def cpt(
    strong_share: np.ndarray, quality: np.ndarray, weak: float, strong: float, target: float
) -> float:
    """Call-performance threshold: the least strong-call share reaching ``target`` PGR.

    Read off the piecewise-linear curve through the operating points, anchored like
    :func:`apgr`. NaN only for targets above 100% that no point reaches.
    """
    x, y = _anchored_curve(strong_share, quality, weak, strong)
    return first_reach(x, y, target, unreached=float("nan"))


def first_reach(x: np.ndarray, y: np.ndarray, target: float, unreached: float) -> float:
    """The least x at which the piecewise-linear curve through (x, y), sorted by x, first
    reaches ``target``; ``unreached`` when it never does."""
    reached = np.flatnonzero(y >= target - 1e-12)
    if reached.size == 0:
        return unreached
    i = int(reached[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


# -- RouterBench -------------------------------------------------------------------------


def upper_hull(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing upper convex hull of cost-quality points.

    Mixing two operating points at random reaches every point on the segment between them,
    so the hull is what a router can actually attain; after its best-quality vertex the
    hull is flat, since spending more never has to lower quality.
    """
    x, y = _as_curve(cost, quality)
    hull: list[int] = []
    for i in range(len(x)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (x[b] - x[a]) * (y[i] - y[a]) - (y[b] - y[a]) * (x[i] - x[a])
            if cross >= 0:  # b lies on or below the segment a-i
                hull.pop()
            else:
                break
        hull.append(i)
    hx, hy = x[hull], y[hull]
    top = int(np.argmax(hy))
    return hx[: top + 1], hy[: top + 1]


def aiq(
    cost: np.ndarray, quality: np.ndarray, cost_range: tuple[float, float] | None = None
) -> float:
    """Average improvement in quality: the mean height of the non-decreasing convex hull
    over ``cost_range`` (default: the points' own cost range).

    Below the cheapest point a policy attains nothing (counted as 0); above its dearest it
    keeps its best quality. A single point with no range given scores its quality.
    """
    hx, hy = upper_hull(cost, quality)
    lo, hi = cost_range if cost_range is not None else (hx[0], float(np.max(cost)))
    if hi <= lo:
        return float(hy[-1]) if hx[0] <= lo else 0.0
    start = max(lo, hx[0])
    if start >= hi:
        return 0.0
    xs = np.r_[start, hx[(hx > start) & (hx < hi)], hi]
    ys = np.interp(xs, hx, hy, right=hy[-1])
    return float(np.trapezoid(ys, xs) / (hi - lo))


def pareto_front(cost: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both cost and quality, by cost."""
    cost = np.asarray(cost, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.float64)
    order = np.lexsort((-quality, cost))
    best = -np.inf
    keep = []
    for i in order:
        if quality[i] > best:
            keep.append(int(i))
            best = quality[i]
    return np.array(keep, dtype=np.int64)


# -- single-number scores ------------------------------------------------------------------

#: RouterArena's cost bounds, USD per 1,000 queries, and its weight of cost against accuracy.
ROUTERARENA_COST_MIN, ROUTERARENA_COST_MAX, ROUTERARENA_BETA = 0.0044, 200.0, 0.1


def routerarena_score(
    accuracy: float,
    cost_per_1k: float,
    c_min: float = ROUTERARENA_COST_MIN,
    c_max: float = ROUTERARENA_COST_MAX,
    beta: float = ROUTERARENA_BETA,
) -> float:
    """RouterArena's "Acc-Cost Arena" score: a weighted harmonic mean of accuracy and a
    log-scaled cost score C = 1 - (log2 c - log2 c_min) / (log2 c_max - log2 c_min)."""
    c = float(np.clip(cost_per_1k, c_min, c_max))
    cost_score = 1.0 - (np.log2(c) - np.log2(c_min)) / (np.log2(c_max) - np.log2(c_min))
    denom = beta * accuracy + cost_score
    return 0.0 if denom == 0 else float((1 + beta) * accuracy * cost_score / denom)


def inference_efficiency(
    quality: float,
    resources: dict[str, float],
    reference: dict[str, float],
    weights: dict[str, float] | None = None,
) -> float:
    """Quality per unit of normalised resource use.

    Each resource (cost, latency, energy) is divided by a reference system's (by default the
    strongest single model), the normalised uses are averaged with ``weights`` (equal by
    default, over the resources known for both), and quality is divided by that average.
    The reference itself scores its own quality; a policy as good at half the resources
    scores twice that.
    """
    keys = [k for k in resources if k in reference and reference[k] > 0
            and np.isfinite(resources[k])]
    if not keys:
        return float("nan")
    w = weights or {k: 1.0 for k in keys}
    total = sum(w.get(k, 0.0) for k in keys)
    use = sum(w.get(k, 0.0) * resources[k] / reference[k] for k in keys) / total
    return float("inf") if use == 0 else float(quality / use)
