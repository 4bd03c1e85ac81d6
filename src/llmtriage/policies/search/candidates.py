"""The candidates a policy search cross-validates: every family a table can support."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from llmtriage.data.errors import DataError
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import Policy
from llmtriage.policies.defaults import mean_cost, near_hull

#: Router families searched when none are named.
ROUTERS = ("knn", "logistic", "mlp", "mf", "sw-ranking")
#: Every family the search knows, in the order reports list them.
FAMILIES = ("single", *ROUTERS, "task-mean", "calibrated-cascade", "agreement-cascade",
            "cascade-routing")
#: The technique groups a study compares, by the name reports give them.
GROUPS = {"routers": (*ROUTERS, "task-mean"),
          "cascades": ("calibrated-cascade", "agreement-cascade"),
          "cascade-routing": ("cascade-routing",)}


def ladders(train: OutcomeTable, keep: int = 6, longest: int = 4, tops: int = 3
            ) -> list[tuple[str, ...]]:
    """Cascade ladders worth trying: ordered by cost, two to ``longest`` rungs, drawn from
    the ``keep`` models closest to the cost-quality hull (a model far below it is beaten by
    mixing its neighbours at any threshold), and ending at one of the ``tops`` best."""
    quality = train.quality.mean(axis=0)
    kept = near_hull(train, keep)
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

    cost = mean_cost(train)
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
    tasks = len(set(train.tasks.tolist())) > 1
    features = {} if embedder is None else {"embedder": embedder}
    # Cascade routing's router: a text router where there is text, else one by task labels.
    routing = features if train.has_text else {"router": "task-mean"} if tasks else None
    out: list[Policy] = []
    for family in families:
        if family == "single":
            out += registry.build("single", context)
        elif family in ROUTERS and train.has_text:
            out.append(registry.build_one(family, context, features))
        elif family == "task-mean" and tasks:
            out.append(registry.build_one(family, context))
        elif family == "calibrated-cascade" and confident:
            out += [registry.build_one(family, context, {"ladder": list(ladder)})
                    for ladder in ladders(train)]
        elif family == "agreement-cascade":
            out += agreement_cascades(train)
        elif family == "cascade-routing" and confident and routing is not None:
            out.append(registry.build_one(family, context, routing))
    if not out:
        raise DataError(f"{train.name} supports none of the searched families "
                        f"{', '.join(families) or '(none named)'}: "
                        + "; ".join(_unsupported(train, families)))
    return out


def _unsupported(train: OutcomeTable, families: Sequence[str]) -> list[str]:
    """Why each of ``families`` gave no candidate on ``train``."""
    need = {f: f"{f} needs prompt text" for f in ROUTERS}
    need |= {"task-mean": "task-mean needs two tasks or more",
             "calibrated-cascade": "calibrated-cascade needs a confidence column",
             "cascade-routing": "cascade-routing needs a confidence column, and prompt text "
                                "or task labels for its router",
             "agreement-cascade": "agreement-cascade needs answers whose final answers parse"}
    return [need[f] for f in dict.fromkeys(families) if f in need] or [
        f"choose among {', '.join(FAMILIES)}"]
