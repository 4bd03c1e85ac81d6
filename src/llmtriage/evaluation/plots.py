"""Cost-quality plots of a comparison (PNG, written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from llmtriage.data.files import write_atomic  # noqa: E402
from llmtriage.evaluation.compare import Comparison  # noqa: E402
from llmtriage.metrics import upper_hull  # noqa: E402


def plot(c: Comparison, path: str | Path) -> Path:
    pair = len(c.models) == 2
    fig, axes = plt.subplots(1, 2 if pair else 1, figsize=(13 if pair else 8, 5.5), squeeze=False)
    ax = axes[0][0]
    singles = c.singles
    ax.scatter([p.cost_per_query for p in singles], [p.quality for p in singles],
               color="0.35", s=22, zorder=3, label="single models")
    for p in singles:
        ax.annotate(p.policy.rsplit("/", 1)[-1], (p.cost_per_query, p.quality), fontsize=6,
                    xytext=(3, 2), textcoords="offset points", color="0.3")
    hx, hy = upper_hull(np.array([p.cost_per_query for p in singles]),
                        np.array([p.quality for p in singles]))
    ax.plot(np.r_[hx, c.cost_range[1]], np.r_[hy, hy[-1]], ":", color="0.4", lw=1,
            label=f"single-model hull (zero router), AIQ {c.zero_router_aiq:.3f}")
    for curve in c.curves:
        if curve.family == "single":
            continue
        xs = [p.cost_per_query for p in curve.points]
        ys = [p.quality for p in curve.points]
        aiq = f", AIQ {curve.aiq:.3f}" if curve.aiq is not None else ""
        style = "*" if curve.family == "oracle" else "o-"
        ax.plot(xs, ys, style, ms=9 if curve.family == "oracle" else 3, label=f"{curve.name}{aiq}")
    fx = [p.cost_per_query for _, p in c.frontier]
    fy = [p.quality for _, p in c.frontier]
    ax.step(fx, fy, where="post", ls="--", color="k", lw=0.8, label="Pareto frontier")
    positive = [x for x in [p.cost_per_query for p in singles] if x > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("cost per query (USD)")
    ax.set_ylabel("quality")
    ax.set_title(f"{c.dataset} [{c.split}]: cost vs quality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if pair:
        ax2 = axes[0][1]
        for curve in c.curves:
            if curve.family == "single" or curve.points[0].strong_share is None:
                continue
            pts = sorted(curve.points, key=lambda p: p.strong_share or 0)
            apgr = f", APGR {curve.apgr:.3f}" if curve.apgr is not None else ""
            ax2.plot([100 * (p.strong_share or 0) for p in pts], [p.quality for p in pts],
                     "*" if curve.family == "oracle" else "o-", ms=3, label=f"{curve.name}{apgr}")
        for p in singles:
            ax2.axhline(p.quality, ls=":", color="0.5", lw=0.8)
            ax2.annotate(p.policy.rsplit("/", 1)[-1], (0, p.quality), fontsize=7, color="0.3")
        ax2.set_xlabel(f"calls to the strong model {c.strong.rsplit('/', 1)[-1]} (%)")
        ax2.set_ylabel("quality")
        ax2.set_title("quality vs strong-model calls")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


#: The resource axes a plot can take: (OperatingPoint attribute, axis label).
AXES = {"cost": ("cost_per_query", "cost per query (USD)"),
        "latency": ("latency_ms", "latency per query (ms)"),
        "energy": ("energy_j", "energy per query (J)")}


def plot_axis(c: Comparison, path: str | Path, axis: str) -> Path:
    """Quality against latency or energy (or cost): for local models, where a dollar axis
    of 1e-7 says nothing, the resource that matters. Each policy's points are joined in the
    order of that resource; the frontier is over that resource."""
    attr, label = AXES[axis]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    singles = c.singles
    ax.scatter([getattr(p, attr) for p in singles], [p.quality for p in singles], color="0.35",
               s=22, zorder=3, label="single models")
    for p in singles:
        ax.annotate(p.policy.rsplit("/", 1)[-1], (getattr(p, attr), p.quality), fontsize=6,
                    xytext=(3, 2), textcoords="offset points", color="0.3")
    everything = []
    for curve in c.curves:
        points = [p for p in curve.points if getattr(p, attr) is not None]
        everything += points
        if curve.family == "single" or not points:
            continue
        points.sort(key=lambda p: getattr(p, attr))
        ax.plot([getattr(p, attr) for p in points], [p.quality for p in points],
                "*" if curve.family == "oracle" else "o-",
                ms=9 if curve.family == "oracle" else 3, label=curve.name)
    if everything:
        from llmtriage.metrics import pareto_front

        xs = np.array([getattr(p, attr) for p in everything])
        ys = np.array([p.quality for p in everything])
        front = pareto_front(xs, ys)
        ax.step(xs[front], ys[front], where="post", ls="--", color="k", lw=0.8,
                label="Pareto frontier")
    ax.set_xlabel(label)
    ax.set_ylabel("quality")
    ax.set_title(f"{c.dataset} [{c.split}]: {axis} vs quality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


#: The image formats a plot is written in, by the file's suffix.
FORMATS = ("png", "svg", "pdf")


def image_format(path: str | Path) -> str:
    """The format ``path``'s suffix names; a ValueError for any other."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"{path}: a plot is written as {', '.join(FORMATS)}; name a file "
                         "ending in one of them")
    return suffix


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Write the figure in the format its suffix names, whole or not at all, and free it."""
    fig.tight_layout()
    fmt = image_format(path)

    def save(tmp: str) -> None:
        fig.savefig(tmp, dpi=120, format=fmt)

    try:
        return write_atomic(path, save)
    finally:
        plt.close(fig)
