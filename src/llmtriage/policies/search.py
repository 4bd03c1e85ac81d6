"""Policy search: the policy that best meets one objective, chosen on the training split.

A user's question is never "which router family is best in general" but "what should I run
on my traffic, for this budget or this quality". The search answers it the way FrugalGPT
chooses its cascade, with cross-validation instead of a peek at the test data:

1. **Candidates.** Every single model; every router family; calibrated cascades over
   searched ladders (ordered subsets of two to four models among those near the train
   split's cost-quality hull, ending at one of its strongest models, not "every model on
   the frontier"); agreement cascades where the answers' texts are recorded; cascade
   routing. Each with its trade-off swept.
2. **Out-of-fold outcomes.** Each candidate is fitted on all folds but one and replayed, by
   the same loop that serves, on the held-out fold; a candidate that learns nothing is
   replayed once on the whole split. Every candidate and setting thus gets one honest
   outcome per training prompt.
3. **The choice.** The :class:`Objective` picks one (candidate, setting) from those
   outcomes; with a guarantee (``delta``) only settings whose quality is certified at
   level ``1 - delta`` (Bonferroni over every setting tested) qualify.

The chosen candidate is then refitted on the whole split. :class:`PolicySearch` (kind
``search``) keeps the chosen policy of every budget on the cross-validated frontier, so one
object traces a cost-quality curve in a report and serves one point of it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binom

from llmtriage import metrics
from llmtriage.backends.replay import ReplayBackend
from llmtriage.data.errors import DataError
from llmtriage.data.splits import kfold
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import Decision, Policy, State
from llmtriage.policies.loop import run_policy

#: Router families searched when none are named.
ROUTERS = ("knn", "logistic", "mlp", "mf", "sw-ranking")
#: Every family the search knows, in the order reports list them.
FAMILIES = ("single", *ROUTERS, "calibrated-cascade", "agreement-cascade", "cascade-routing")
#: The technique groups a study compares, by the name reports give them.
GROUPS = {"routers": ROUTERS, "cascades": ("calibrated-cascade", "agreement-cascade"),
          "cascade-routing": ("cascade-routing",)}
#: What a quality objective may minimise.
RESOURCES = {"cost": "cost_usd", "latency": "latency_ms", "energy": "energy_j"}
OUTCOMES = ("quality", "cost_usd", "latency_ms", "energy_j")


@dataclass(frozen=True)
class Objective:
    """What the search optimises, written ``kind=value[,key=value...]``:

    - ``lam=X``: the most quality minus X times the cost per query (X: quality per USD);
    - ``budget=X``: the most quality at a mean cost per query of at most X USD;
    - ``latency=X``: the most quality at a mean latency of at most X ms;
    - ``quality=X``: the least mean cost (``minimize=latency`` or ``energy``: that) at a
      mean quality of at least X; with ``delta=D``, certified so with probability 1 - D;
    - ``match=X``: as ``quality``, with the target the best single model's quality minus X
      (``match=0`` asks for its quality; ``match=0.01`` allows one point less).
    """

    kind: str
    value: float
    minimize: str = "cost"
    delta: float | None = None

    KINDS = ("lam", "budget", "latency", "quality", "match")

    @classmethod
    def parse(cls, text: str) -> Objective:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        pairs: dict[str, str] = {}
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep:
                raise DataError(f"objective {text!r}: write key=value, e.g. budget=0.001 or "
                                "quality=0.8,delta=0.1")
            pairs[key.strip()] = value.strip()
        kinds = [k for k in pairs if k in cls.KINDS]
        if len(kinds) != 1:
            raise DataError(f"objective {text!r}: name exactly one of {', '.join(cls.KINDS)}")
        unknown = set(pairs) - {*cls.KINDS, "minimize", "delta"}
        if unknown:
            raise DataError(f"objective {text!r}: unknown key(s) {sorted(unknown)}")
        try:
            value = float(pairs[kinds[0]])
            delta = float(pairs["delta"]) if "delta" in pairs else None
        except ValueError:
            raise DataError(f"objective {text!r}: values must be numbers") from None
        minimize = pairs.get("minimize", "cost")
        if minimize not in RESOURCES:
            raise DataError(f"objective {text!r}: minimize one of {', '.join(RESOURCES)}")
        if delta is not None and not (0.0 < delta < 1.0 and kinds[0] in ("quality", "match")):
            raise DataError(f"objective {text!r}: delta is a probability in (0, 1) that "
                            "goes with a quality target")
        if not np.isfinite(value) or value < 0:
            raise DataError(f"objective {text!r}: {kinds[0]} must be a number >= 0")
        return cls(kinds[0], value, minimize, delta)

    def __str__(self) -> str:
        extra = (f",minimize={self.minimize}" if self.minimize != "cost" else "") + (
            f",delta={self.delta:g}" if self.delta is not None else "")
        return f"{self.kind}={self.value:g}{extra}"

    def check(self, table: OutcomeTable) -> None:
        """Refuse a table that lacks the measurement this objective is about."""
        needed = {"latency": "latency_ms", "quality": RESOURCES[self.minimize],
                  "match": RESOURCES[self.minimize]}.get(self.kind, "cost_usd")
        if not table.has(needed):
            raise DataError(f"{table.name} records no {needed}, which objective {self} needs")

    def choose(self, outcomes: CrossValidated) -> tuple[int, bool]:
        """(index of the chosen setting, whether it meets the objective)."""
        return self.pick(outcomes, self.qualifies(outcomes))

    def qualifies(self, outcomes: CrossValidated) -> np.ndarray:
        """Which settings meet the objective's constraint (all, for ``lam``)."""
        q = outcomes.mean("quality")
        if self.kind == "lam":
            return np.ones(len(q), dtype=bool)
        if self.kind in ("budget", "latency"):
            return outcomes.mean("cost_usd" if self.kind == "budget" else "latency_ms") \
                <= self.value
        target = self.target(outcomes)
        return q >= target - 1e-12 if self.delta is None else self.certified(outcomes, target)

    def pick(self, outcomes: CrossValidated, ok: np.ndarray) -> tuple[int, bool]:
        """The best of the qualifying settings; without any, the closest to qualifying."""
        q = outcomes.mean("quality")
        if self.kind == "lam":
            return int(np.argmax(q - self.value * outcomes.mean("cost_usd"))), True
        if self.kind in ("budget", "latency"):
            spent = outcomes.mean("cost_usd" if self.kind == "budget" else "latency_ms")
            if not ok.any():
                return int(np.argmin(spent)), False
            return _best(np.where(ok, q, -np.inf), -spent), True
        if not ok.any():
            return int(np.argmax(q)), False
        return _best(np.where(ok, -outcomes.mean(RESOURCES[self.minimize]), -np.inf), q), True

    def target(self, outcomes: CrossValidated) -> float:
        """The quality a ``quality`` or ``match`` objective asks for."""
        if self.kind != "match":
            return self.value
        singles = [r for r, f in enumerate(outcomes.families) if f == "single"]
        if not singles:
            raise DataError("match=X is relative to the best single model: search 'single'")
        return float(outcomes.mean("quality")[singles].max()) - self.value

    def certified(self, outcomes: CrossValidated, target: float) -> np.ndarray:
        """Settings whose quality is at least ``target`` with probability ``1 - delta``.

        Learn-Then-Test with fixed-sequence testing: each candidate's settings are tested
        from the dearest (the most cautious) to the cheapest and certified until the first
        that fails, so a candidate's whole sweep costs one test's error budget; the budget
        is split evenly over the candidates (Bonferroni). The test is an exact binomial one
        on right/wrong outcomes, Hoeffding's bound on graded ones."""
        q = outcomes.values["quality"]
        n = q.shape[1]
        groups: dict[int, list[int]] = {}
        for row, (index, _) in enumerate(outcomes.settings):
            groups.setdefault(index, []).append(row)
        level = float(self.delta) / len(groups)
        if np.isin(q, (0.0, 1.0)).all():
            errors = (q < 0.5).sum(axis=1)
            passes = binom.cdf(errors, n, 1.0 - target) <= level
        else:
            passes = q.mean(axis=1) - np.sqrt(np.log(1.0 / level) / (2 * n)) >= target
        spent = outcomes.mean(RESOURCES[self.minimize])
        ok = np.zeros(len(q), dtype=bool)
        for rows in groups.values():
            for row in sorted(rows, key=lambda r: -spent[r]):
                if not passes[row]:
                    break
                ok[row] = True
        return ok


def _best(primary: np.ndarray, tiebreak: np.ndarray) -> int:
    return int(np.lexsort((-tiebreak, -primary))[0])


@dataclass
class CrossValidated:
    """Out-of-fold outcomes of every (candidate, setting): one row per setting, one column
    per training prompt, for each of :data:`OUTCOMES` that the table records."""

    labels: list[str]
    families: list[str]
    #: (index into ``prototypes``, trade-off value or None) per row.
    settings: list[tuple[int, float | None]]
    prototypes: list[Policy]
    values: dict[str, np.ndarray]
    seconds: dict[str, float] = field(default_factory=dict)
    #: Each prototype fitted on the whole split (what a chosen setting serves), by index.
    fitted: dict[int, Policy] = field(default_factory=dict)

    def fitted_policy(self, row: int, table: OutcomeTable) -> Policy:
        """The row's candidate fitted on the whole split, at its setting."""
        index, value = self.settings[row]
        if index not in self.fitted:
            self.fitted[index] = _clone(self.prototypes[index]).fit(table)
        return _at(self.fitted[index], value)

    def mean(self, outcome: str) -> np.ndarray:
        return self.values[outcome].mean(axis=1)

    def policy(self, row: int) -> Policy:
        """The unfitted candidate of a row, with its setting."""
        index, value = self.settings[row]
        proto = self.prototypes[index]
        return proto.with_params(**{proto.tradeoff: value}) if value is not None else proto

    def frontier(self) -> np.ndarray:
        """Rows on the cross-validated cost-quality Pareto front, cheapest first."""
        return metrics.pareto_front(self.mean("cost_usd"), self.mean("quality"))


@dataclass
class SearchResult:
    objective: Objective
    chosen: int
    met: bool
    policy: Policy
    outcomes: CrossValidated
    folds: int

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
            pick, met = self.objective.pick(_subset(self.outcomes, mine), qualified[mine])
            row = mine[pick]
            rows.append({"policy": self.outcomes.labels[row], "family": proto.name,
                         "meets": met, "chosen": row == self.chosen,
                         **{k: float(v[row].mean()) for k, v in self.outcomes.values.items()}})
        key = {"lam": lambda r: -(r["quality"] - self.objective.value * r["cost_usd"]),
               "quality": lambda r: (not r["meets"],
                                     r.get(RESOURCES[self.objective.minimize], 0.0))}
        key["match"] = key["quality"]
        rows.sort(key=key.get(self.objective.kind,
                              lambda r: (not r["meets"], -r["quality"])))
        return rows[:top]


def _subset(cv: CrossValidated, rows: list[int]) -> CrossValidated:
    return CrossValidated([cv.labels[r] for r in rows], [cv.families[r] for r in rows],
                          [cv.settings[r] for r in rows], cv.prototypes,
                          {k: v[rows] for k, v in cv.values.items()}, cv.seconds, cv.fitted)


# -- candidates ---------------------------------------------------------------------------


def ladders(train: OutcomeTable, keep: int = 6, longest: int = 4, tops: int = 3
            ) -> list[tuple[str, ...]]:
    """Cascade ladders worth trying: ordered by cost, two to ``longest`` rungs, drawn from
    the ``keep`` models closest to the cost-quality hull (a model far below it is beaten by
    mixing its neighbours at any threshold), and ending at one of the ``tops`` best."""
    quality = train.quality.mean(axis=0)
    cost = _mean_cost(train)
    hx, hy = metrics.upper_hull(cost, quality)
    below = np.interp(cost, hx, hy, right=hy[-1]) - quality
    kept = sorted(np.argsort(below, kind="stable")[:keep].tolist(), key=lambda i: cost[i])
    best = set(np.argsort(-quality[kept], kind="stable")[:tops].tolist())
    out = []
    for size in range(2, longest + 1):
        for combo in itertools.combinations(range(len(kept)), size):
            if combo[-1] in best:
                out.append(tuple(train.models[kept[i]] for i in combo))
    return out


def agreement_cascades(train: OutcomeTable, voters: int = 1, cheap: int = 5, tops: int = 3
                       ) -> list[Policy]:
    """Agreement cascades over the ``cheap`` cheapest models whose answers mostly parse
    to a final answer, one or ``voters`` voters, and each of the ``tops`` best models as
    fallback."""
    if train.responses is None:
        return []
    from llmtriage.policies.cascades import AgreementCascade
    from llmtriage.signals.agreement import final_answer

    cost = _mean_cost(train)
    quality = train.quality.mean(axis=0)
    sample = train.responses[: min(200, train.n_prompts)]
    parses = np.array([np.mean([final_answer(str(t)) != "" for t in sample[:, j]])
                       for j in range(train.n_models)])
    pool = [j for j in np.argsort(cost, kind="stable") if parses[j] >= 0.9][:cheap]
    fallbacks = np.argsort(-quality, kind="stable")[:tops].tolist()
    out: list[Policy] = []
    for a in pool:
        others = [v for v in pool if v != a]
        for n in range(1, voters + 1):
            for vs in itertools.combinations(others, n):
                for f in fallbacks:
                    if f != a and f not in vs:
                        out.append(AgreementCascade(train.models[a],
                                                    [train.models[v] for v in vs],
                                                    train.models[f]))
    return out


def candidates(train: OutcomeTable, families: Sequence[str] = FAMILIES,
               embedder: str | None = None) -> list[Policy]:
    """Unfitted candidates of the given families that this table can support; routers
    read ``embedder``'s features (default: each router's own)."""
    from llmtriage.policies import registry  # which registers this module's kind

    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise DataError(f"unknown search families {sorted(unknown)}; choose among "
                        f"{', '.join(FAMILIES)}")
    context = registry.Context(train.models, train)
    confident = train.has("confidence")
    features = {} if embedder is None else {"embedder": embedder}
    out: list[Policy] = []
    for family in families:
        if family == "single":
            out += registry.build("single", context)
        elif family in ROUTERS:
            out.append(registry.build_one(family, context, features))
        elif family == "calibrated-cascade" and confident:
            out += [registry.build_one(family, context, {"ladder": list(ladder)})
                    for ladder in ladders(train)]
        elif family == "agreement-cascade":
            out += agreement_cascades(train)
        elif family == "cascade-routing" and confident:
            out.append(registry.build_one(family, context, features))
    return out


# -- cross-validation ---------------------------------------------------------------------


def replay_outcomes(policy: Policy, table: OutcomeTable) -> dict[str, np.ndarray]:
    """Per prompt: the accepted answer's recorded quality and the resources spent (NaN
    where the table records none)."""
    backend = ReplayBackend(table, with_answers=policy.reads_answers,
                            fields=("confidence", "cost_usd", "latency_ms", "energy_j"))
    trace = run_policy(policy, backend, backend.queries())
    rows = np.arange(table.n_prompts)
    out = {"quality": table.quality[rows, trace.accepted_model]}
    for name in OUTCOMES[1:]:
        if table.has(name):
            out[name] = trace.total(name)
    return out


def cross_validate(
    train: OutcomeTable,
    policies: Sequence[Policy],
    folds: int = 3,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> CrossValidated:
    """Out-of-fold outcomes of every policy at every setting of its trade-off."""
    splits = list(kfold(train.n_prompts, folds, seed))
    order = np.concatenate([held for _, held in splits])
    parts = [(train.take(kept), train.take(held)) for kept, held in splits]
    labels, families, settings = [], [], []
    values: dict[str, list[np.ndarray]] = {}
    seconds: dict[str, float] = {}
    fitted: dict[int, Policy] = {}
    for index, proto in enumerate(policies):
        started = time.perf_counter()
        rows, fitted[index] = _candidate_outcomes(proto, train, parts, order)
        seconds[proto.name] = seconds.get(proto.name, 0.0) + time.perf_counter() - started
        for value, outcome in rows:
            labels.append(_describe(_at(proto, value)))
            families.append(proto.name)
            settings.append((index, value))
            for k, v in outcome.items():
                values.setdefault(k, []).append(v.astype(np.float32))
        if progress:
            progress(proto.curve_name)
    stacked = {k: np.vstack(v) for k, v in values.items() if len(v) == len(labels)}
    return CrossValidated(labels, families, settings, list(policies), stacked, seconds,
                          fitted)


def _candidate_outcomes(proto: Policy, train: OutcomeTable,
                        parts: list[tuple[OutcomeTable, OutcomeTable]], order: np.ndarray
                        ) -> tuple[list[tuple[float | None, dict[str, np.ndarray]]], Policy]:
    """Per setting, the out-of-fold outcomes; and the candidate fitted on all of ``train``.

    The whole-split fit comes first: it is what a chosen setting serves, its trade-off grid
    is swept in every fold, and the hyperparameter it picked by its own inner
    cross-validation (a router's ``"auto"``) is reused in the folds instead of being
    re-searched three times over."""
    full = proto.fit(train) if not proto.requires_fit else _clone(proto).fit(train)
    grid = list(full.grid(train)) if full.tradeoff else [None]
    if not proto.requires_fit:  # nothing learned: the whole split is out of fold
        return [(v, {k: a[order] for k, a in replay_outcomes(_at(full, v), train).items()})
                for v in grid], full
    per_fold = []
    for kept, held in parts:
        fitted = _clone(proto, like=full).fit(kept)
        per_fold.append([replay_outcomes(_at(fitted, v), held) for v in grid])
    return [(v, {k: np.concatenate([fold[i][k] for fold in per_fold])
                 for k in per_fold[0][i]}) for i, v in enumerate(grid)], full


def _describe(policy: Policy) -> str:
    """A label that tells candidates of one kind apart (a cascade by its ladder)."""
    ladder = getattr(policy, "ladder", None)
    if ladder and policy.name == "calibrated-cascade":
        return f"{policy.label}({'>'.join(ladder)})"
    return policy.label


def _at(policy: Policy, value: float | None) -> Policy:
    return policy if value is None else policy.with_params(**{policy.tradeoff: value})


def _clone(policy: Policy, like: Policy | None = None) -> Policy:
    """A fresh unfitted copy with the same parameters (and features, for routers); with
    ``like`` (the same candidate, fitted), an ``"auto"`` hyperparameter set to its choice."""
    clone = type(policy).__new__(type(policy))
    clone.__dict__.update(policy.params())
    embedder = getattr(policy, "embedder_", None)
    if embedder is not None:
        clone.embedder_ = embedder
    auto = getattr(policy, "auto_param", "")
    if like is not None and auto and getattr(policy, auto) == "auto":
        setattr(clone, auto, like.chosen_)
    if hasattr(policy, "router"):  # cascade routing: a fresh router inside
        clone.router = _clone(policy.router, like.router if like is not None else None)
    return clone


def _mean_cost(table: OutcomeTable) -> np.ndarray:
    if not table.has("cost_usd"):
        return np.arange(table.n_models, dtype=np.float64)
    return np.nan_to_num(np.nanmean(table.cost_usd, axis=0))


def search(
    train: OutcomeTable,
    objective: Objective,
    families: Sequence[str] = FAMILIES,
    folds: int = 3,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> SearchResult:
    """Cross-validate every candidate on ``train``, choose by ``objective``, refit it."""
    objective.check(train)
    outcomes = cross_validate(train, candidates(train, families), folds, seed, progress)
    return choose(train, objective, outcomes, folds)


def choose(train: OutcomeTable, objective: Objective, outcomes: CrossValidated,
           folds: int = 3) -> SearchResult:
    """The objective's pick among cross-validated outcomes, refitted on all of ``train``."""
    chosen, met = objective.choose(outcomes)
    return SearchResult(objective, chosen, met, outcomes.fitted_policy(chosen, train),
                        outcomes, folds)


# -- the searched policy as one object ----------------------------------------------------


class PolicySearch(Policy):
    """The search's choice at every budget on the cross-validated frontier.

    Fitting runs the search; each frontier point's policy is refitted on the whole split and
    kept. ``budget`` (USD per query; None: the best quality) picks the member that serves,
    so sweeping it traces the searched policy's curve, and a saved one serves its point.
    """

    name = "search"
    requires_fit = True
    tradeoff = "budget"

    def __init__(self, budget: float | None = None, families: Sequence[str] = FAMILIES,
                 folds: int = 3, embedder: str | None = None) -> None:
        """``families``: what is searched (:data:`FAMILIES`); ``embedder``: the routers'
        query features by name (default MiniLM; ``hashing`` is instant)."""
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
        mine = _subset(outcomes, rows)
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

    def grid(self, table: OutcomeTable) -> list[float]:
        return self.member_cost_.tolist()

    @property
    def label(self) -> str:
        chosen = self.member().label if hasattr(self, "members_") else "?"
        return f"{self.curve_name}[{chosen}]"

    def step(self, state: State) -> Decision:
        return self.member().step(state)


def best_ladder(train: OutcomeTable, folds: int = 3) -> list[str]:
    """The calibrated cascade ladder with the best cross-validated AIQ over its thresholds
    (over the single models' cost range): the default ladder wherever none is named."""
    protos = candidates(train, ("calibrated-cascade",))
    if not protos:
        return list(train.models[:1])
    outcomes = cross_validate(train, protos, folds)
    cost = _mean_cost(train)
    span = (float(cost.min()), float(cost.max()))
    q, c = outcomes.mean("quality"), outcomes.mean("cost_usd")
    index = np.array([i for i, _ in outcomes.settings])
    scores = [metrics.aiq(c[index == i], q[index == i], span) for i in range(len(protos))]
    return list(protos[int(np.argmax(scores))].ladder)
