"""Turn a comparison into records (JSON), terminal tables and verdict lines."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmtriage import metrics
from llmtriage.data.files import write_atomic
from llmtriage.evaluation.compare import Comparison
from llmtriage.evaluation.evaluate import OperatingPoint
from llmtriage.evaluation.headline import Headline, describe, headlines


def _reference(c: Comparison) -> dict[str, float] | None:
    """The strongest single model's resource use, which efficiency is measured against."""
    strong = next((p for p in c.singles if p.policy == c.strong), None)
    if strong is None:
        return None
    ref = {"cost": strong.cost_per_query}
    if strong.latency_ms:
        ref["latency"] = strong.latency_ms
    if strong.energy_j:
        ref["energy"] = strong.energy_j
    return ref


def _scores(c: Comparison, p: OperatingPoint) -> dict[str, float]:
    resources = {"cost": p.cost_per_query}
    if p.latency_ms is not None:
        resources["latency"] = p.latency_ms
    if p.energy_j is not None:
        resources["energy"] = p.energy_j
    reference = _reference(c)
    return {
        "ies": (metrics.inference_efficiency(p.quality, resources, reference)
                if reference else None),
        "routerarena_score": metrics.routerarena_score(p.quality, p.cost_per_1k),
    }


def records(c: Comparison, heads: list[Headline] | None = None) -> list[dict]:
    """One record per policy and operating point; policy-level metrics repeated on each.
    ``heads``: the comparison's headlines where the caller has them already (bootstrapped
    once, not once per output)."""
    on_front = {id(p) for _, p in c.frontier}
    headline = {h.policy: h.record() for h in (headlines(c) if heads is None else heads)}
    out = []
    for curve in c.curves:
        for p in curve.points:
            rec = {
                "dataset": c.dataset,
                "split": c.split,
                **p.record(),
                "aiq": curve.aiq,
                "apgr": curve.apgr,
                "cpt": curve.cpt or None,
                "on_frontier": id(p) in on_front,
                "in_sample": curve.family in c.in_sample,
                "headline": headline.get(curve.name),
                **_scores(c, p),
            }
            rec["policy_name"] = curve.name
            out.append(_finite(rec))
    return out


def _finite(value):
    """JSON has no NaN or infinity: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(c: Comparison, path: str | Path, heads: list[Headline] | None = None) -> Path:
    def dump(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(records(c, heads), f, indent=1)

    return write_atomic(path, dump)


def _money(x: float) -> str:
    return f"${x:.3g}"


def _ci(p: OperatingPoint, key: str, fmt: str) -> str:
    if key not in p.ci:
        return ""
    lo, hi = p.ci[key]
    return f" ±{(hi - lo) / 2:{fmt}}"


def _thin(points: list[OperatingPoint], keep: int = 5) -> list[OperatingPoint]:
    if len(points) <= keep:
        return points
    idx = sorted({round(i * (len(points) - 1) / (keep - 1)) for i in range(keep)})
    return [points[i] for i in idx]


def render(c: Comparison, console: Console, heads: list[Headline] | None = None) -> None:
    sizes = ", ".join(f"{k} {v}" for k, v in c.split_sizes.items())
    console.print(f"[bold]{escape(c.dataset)}[/]: {len(c.models)} models; splits: {sizes}; "
                  f"evaluated on [bold]{c.split}[/]")
    pair = len(c.models) == 2
    t = Table(title="operating points (swept policies thinned to 5 points)", show_lines=False)
    for col in ("policy", "quality ±95% CI", "cost/query", "$/1k", "latency ms", "calls/q"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    if pair:
        t.add_column("strong %", justify="right")
    on_front = {id(p) for _, p in c.frontier}
    for curve in c.curves:
        for p in _thin(curve.points):
            row = [
                ("* " if id(p) in on_front else "  ") + escape(p.policy),
                f"{p.quality:.3f}{_ci(p, 'quality', '.3f')}",
                _money(p.cost_per_query),
                f"{p.cost_per_1k:.3g}",
                "n/a" if p.latency_ms is None else f"{p.latency_ms:.0f}",
                f"{p.calls_per_query:.2f}",
            ]
            if pair:
                row.append(f"{100 * (p.strong_share or 0):.0f}")
            t.add_row(*row)
    console.print(t)
    m = Table(title=f"curve metrics (AIQ over single-model cost range "
                    f"{_money(c.cost_range[0])}..{_money(c.cost_range[1])})")
    for col in ("policy", "points", "AIQ", "APGR", "CPT(20%)", "CPT(50%)", "CPT(80%)"):
        m.add_column(col, justify="left" if col == "policy" else "right")
    m.add_row("single models (zero router)", str(len(c.singles)), f"{c.zero_router_aiq:.4f}",
              "", "", "", "")
    for curve in c.curves:
        if curve.family == "single":
            continue
        cpt = [f"{curve.cpt[k]:.1%}" if k in curve.cpt and math.isfinite(curve.cpt[k]) else ""
               for k in ("20%", "50%", "80%")]
        m.add_row(escape(curve.name), str(len(curve.points)),
                  "" if curve.aiq is None else f"{curve.aiq:.4f}",
                  "" if curve.apgr is None else f"{curve.apgr:.3f}", *cpt)
    console.print(m)
    for h in headlines(c) if heads is None else heads:
        console.print(escape(describe(h)))
    for line in versus_best(c):
        console.print(escape(line))
    verdict = c.oracle_verdict()
    if verdict:
        console.print(escape(verdict))
    console.print("* = on the Pareto frontier over all policies")


def versus_best(c: Comparison, within: float = 0.01) -> list[str]:
    """Per policy (other than single models and the oracle): its cheapest point within
    ``within`` of the best single model's quality, in shares of that model's cost, latency
    and energy; or, when no point gets there, that it does not, and its best point."""
    best = max(c.singles, key=lambda p: (p.quality, -p.cost_per_query), default=None)
    if best is None:
        return []
    out = []
    for curve in c.curves:
        if curve.family in ("single", "oracle"):
            continue
        close = [p for p in curve.points if p.quality >= best.quality - within]
        if len(curve.points) == 1:  # one operating point (a saved policy): say where it is
            close = curve.points
        if not close:
            top = max(curve.points, key=lambda p: p.quality)
            out.append(f"{curve.name}: no point within {within:.2f} of {best.policy}'s quality "
                       f"({best.quality:.3f}); its best is {top.quality:.3f}")
            continue
        p = min(close, key=lambda p: p.cost_per_query)
        shares = [f"{p.cost_per_query / best.cost_per_query:.0%} of its cost"
                  if best.cost_per_query > 0 else f"{_money(p.cost_per_query)} a query"]
        if p.latency_ms is not None and best.latency_ms:
            shares.append(f"{p.latency_ms / best.latency_ms:.0%} of its latency")
        if p.energy_j is not None and best.energy_j:
            shares.append(f"{p.energy_j / best.energy_j:.0%} of its energy")
        out.append(f"{p.policy}: quality {p.quality:.3f} against {best.policy}'s "
                   f"{best.quality:.3f}, at {', '.join(shares)}")
    return out
