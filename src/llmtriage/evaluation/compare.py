"""Compare a set of policies on one table: curves, summary metrics and the frontier."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from llmtriage import metrics
from llmtriage.data.errors import DataError
from llmtriage.data.table import TEST, TRAIN, OutcomeTable
from llmtriage.evaluation.evaluate import (
    BOOTSTRAP,
    OperatingPoint,
    evaluate,
    refuse_blind_replay,
    sweep,
)
from llmtriage.policies import registry
from llmtriage.policies.base import Policy
from llmtriage.policies.defaults import reference_pair

#: PGR targets at which CPT is reported, as RouteLLM does.
CPT_TARGETS = (0.2, 0.5, 0.8)


@dataclass
class PolicyCurve:
    """A policy's operating points (one, or one per trade-off value) and its summary metrics."""

    name: str
    family: str
    points: list[OperatingPoint]
    aiq: float | None = None
    apgr: float | None = None
    cpt: dict[str, float] = field(default_factory=dict)

    @property
    def swept(self) -> bool:
        return len(self.points) > 1


@dataclass
class Comparison:
    dataset: str
    split: str
    split_sizes: dict[str, int]
    models: tuple[str, ...]
    curves: list[PolicyCurve]
    cost_range: tuple[float, float]
    #: AIQ of the single models' hull: RouterBench's "zero router".
    zero_router_aiq: float
    frontier: list[tuple[str, OperatingPoint]]
    notes: list[str]
    strong: str
    weak: str
    #: The kinds fitted on the prompts they are scored on (``split`` train or all).
    in_sample: tuple[str, ...] = ()

    def curve(self, name: str) -> PolicyCurve:
        return next(c for c in self.curves if c.name == name)

    @property
    def singles(self) -> list[OperatingPoint]:
        return [c.points[0] for c in self.curves if c.family == "single"]

    def oracle_verdict(self) -> str | None:
        """Whether some oracle operating point beats every single model on quality while
        costing less than the best single model."""
        curve = next((c for c in self.curves if c.family == "oracle"), None)
        if curve is None:
            return None
        best = max(self.singles, key=lambda p: (p.quality, -p.cost_per_query))
        winners = [p for p in curve.points
                   if p.quality > best.quality and p.cost_per_query < best.cost_per_query]
        ties = [p for p in curve.points
                if p.quality >= best.quality and p.cost_per_query < best.cost_per_query]
        if not winners and ties:
            tie = min(ties, key=lambda p: p.cost_per_query)
            return (f"oracle matches the best single model {best.policy} ({best.quality:.3f}) "
                    f"at {tie.cost_per_query / best.cost_per_query:.0%} of its cost, but no "
                    f"oracle point beats its quality")
        if not winners:
            return (f"oracle does NOT beat every single model at lower cost than the best "
                    f"single model {best.policy} ({best.quality:.3f})")
        win = max(winners, key=lambda p: p.quality)
        return (
            f"oracle beats every single model on quality at lower cost: {win.quality:.3f} vs "
            f"{best.quality:.3f} for the best single model {best.policy}, at "
            f"{win.cost_per_query / best.cost_per_query:.0%} of its cost"
        )

    def oracle_beats_all(self) -> bool:
        verdict = self.oracle_verdict()
        return verdict is not None and verdict.startswith("oracle beats")


def default_policies(table: OutcomeTable) -> list[Policy]:
    """The kinds ``triage bench`` runs when none is named: every single model, the oracle,
    random mixing of the cheapest and best model, and a calibrated confidence cascade up the
    train split's Pareto ladder where the table records a confidence (calibrated per model:
    raw scores mean different things for different models)."""
    context = registry.Context.of(table)
    policies: list[Policy] = []
    for name in registry.kinds():
        kind = registry.get(name)
        if not kind.default or (kind.needs_confidence and not table.has("confidence")):
            continue
        built = registry.build(name, context)
        if name == "random" and built[0].weak == built[0].strong:
            continue
        if name == "calibrated-cascade" and len(built[0].ladder) < 2:
            continue
        policies += built
    return policies


def compare(
    table: OutcomeTable,
    policies: Sequence[Policy],
    *,
    split: str = TEST,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    fitted: Sequence[Policy] = (),
) -> Comparison:
    """Fit each policy on the training split, sweep its trade-off, replay it on ``split``.

    Policies in ``fitted`` were fitted on that training split already (a study fits its
    searches from one shared cross-validation): they are swept, not fitted again."""
    prefitted = {id(p) for p in fitted}
    has_train = (table.splits == TRAIN).any() and split != "all"
    train = table.split(TRAIN) if has_train else table
    learners = sorted({p.name for p in policies if _fitted_here(p, prefitted)})
    in_sample = split != TEST or not has_train
    if learners and split == TEST and not has_train:
        raise DataError(
            f"table {table.name!r} has no prompts in split 'train': fitting "
            f"{', '.join(learners)} on its test prompts would score them on what they "
            "learned; mark some prompts 'train', or leave 'split' empty to have it "
            "assigned by hash")
    evaluated = table.split(split)
    refuse_blind_replay(evaluated, [p for p in policies if getattr(p, "frozen_", False)])
    curves = []
    for policy in policies:
        # A loaded artifact is replayed as it was saved: not refitted, not re-swept, so the
        # point reported is the one it serves.
        frozen = getattr(policy, "frozen_", False)
        if not frozen and id(policy) not in prefitted:
            policy.fit(evaluated if policy.reads_gold else train)
        values = policy.grid(train) if policy.tradeoff and not frozen else []
        if values:
            points = sweep(policy, values, evaluated, bootstrap=bootstrap, seed=seed,
                           progress=progress)
        else:
            points = [evaluate(policy, evaluated, bootstrap=bootstrap, seed=seed)]
            if progress:
                progress(policy.label)
        label = policy.curve_name if values else policy.label
        curves.append(PolicyCurve(label, policy.name, points))
    result = _score(table, evaluated, split, curves)
    if learners and in_sample:
        result.in_sample = tuple(learners)
        result.notes.append(
            f"in-sample (split {split!r}): {', '.join(learners)} fitted and scored on the "
            "same prompts, figures that flatter; the test split is the honest one")
    return result


def _fitted_here(policy: Policy, prefitted: set[int]) -> bool:
    """Whether ``compare`` fits ``policy`` on the training prompts: an upper bound reads the
    evaluated prompts by design, a loaded artifact or a study's search comes fitted."""
    return (policy.requires_fit and not policy.reads_gold and id(policy) not in prefitted
            and not getattr(policy, "frozen_", False))


def _score(
    table: OutcomeTable, evaluated: OutcomeTable, split: str, curves: list[PolicyCurve]
) -> Comparison:
    singles = [c.points[0] for c in curves if c.family == "single"]
    single_cost = np.array([p.cost_per_query for p in singles])
    single_quality = np.array([p.quality for p in singles])
    cost_range = (float(single_cost.min()), float(single_cost.max())) if singles else (0.0, 0.0)
    weak, strong = reference_pair(evaluated)
    q_weak = float(evaluated.quality[:, evaluated.model_index(weak)].mean())
    q_strong = float(evaluated.quality[:, evaluated.model_index(strong)].mean())
    pair = evaluated.n_models == 2 and q_strong > q_weak
    for c in curves:
        cost = np.array([p.cost_per_query for p in c.points])
        quality = np.array([p.quality for p in c.points])
        c.aiq = metrics.aiq(cost, quality, cost_range) if singles else None
        if pair and c.family not in ("single",):
            share = np.array([p.strong_share for p in c.points], dtype=float)
            c.apgr = metrics.apgr(share, quality, q_weak, q_strong)
            c.cpt = {f"{t:.0%}": metrics.cpt(share, quality, q_weak, q_strong, t)
                     for t in CPT_TARGETS}
    all_points = [(c.name, p) for c in curves for p in c.points]
    front = metrics.pareto_front(
        np.array([p.cost_per_query for _, p in all_points]),
        np.array([p.quality for _, p in all_points]),
    )
    zero = metrics.aiq(single_cost, single_quality, cost_range) if singles else float("nan")
    return Comparison(
        dataset=table.name,
        split=split,
        split_sizes=table.split_sizes(),
        models=table.models,
        curves=curves,
        cost_range=cost_range,
        zero_router_aiq=zero,
        frontier=[all_points[i] for i in front],
        notes=list(table.notes),
        strong=strong,
        weak=weak,
    )
