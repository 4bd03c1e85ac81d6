"""Every policy kind, registered once by name, with the one builder everybody uses.

The name a user types after ``triage bench -p`` or ``triage fit --policy``, writes as
``kind`` in a gateway's ``[[policies]]``, and finds in a saved artifact's header is the same
word, and it goes through :func:`build` in every case. A new policy is a module plus one
:func:`register` line at the bottom of this file (or in the module that defines it); the
contract test (``tests/test_policy_contract.py``) then runs on it without further ado.

A builder turns user parameters into policies, filling what the user left out from the
:class:`Context`: the models on offer and, where there is one, the training split (a
calibrated cascade's default ladder is the one with the best cross-validated AIQ; random
mixing's pair is its cheapest and best model).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmtriage.data.errors import DataError
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import Policy
from llmtriage.policies.params import checked


@dataclass(frozen=True)
class Context:
    """What a builder may read to fill defaults."""

    #: The models the policy may call (a table's, or a catalog's), in order.
    models: tuple[str, ...]
    #: The training split, where there is one (bench, fit; a gateway policy with a table).
    train: OutcomeTable | None = None

    @classmethod
    def of(cls, table: OutcomeTable) -> Context:
        from llmtriage.data.table import TRAIN

        has_train = bool((table.splits == TRAIN).any())
        return cls(table.models, table.split(TRAIN) if has_train else table)


Builder = Callable[[Context, dict[str, Any]], list[Policy]]


@dataclass(frozen=True)
class PolicyKind:
    name: str
    cls: type[Policy]
    build: Builder
    summary: str
    #: Fitting reads the table's confidence column (a cascade judges answers by it).
    needs_confidence: bool = False
    #: Shown by ``triage bench`` when no ``-p`` is given.
    default: bool = False
    #: Fitting reads the prompts' text (a router embeds it).
    needs_text: bool = False


_KINDS: dict[str, PolicyKind] = {}


def register(name: str, cls: type[Policy], summary: str, build: Builder | None = None, *,
             needs_confidence: bool = False, default: bool = False,
             needs_text: bool = False) -> None:
    """Make a policy kind known to bench, fit, serve, ask and artifact loading."""
    if name in _KINDS and _KINDS[name].cls is not cls:
        raise ValueError(f"policy kind {name!r} is registered already")
    _KINDS[name] = PolicyKind(name, cls, build or _plain(cls), summary, needs_confidence,
                              default, needs_text)


def unregister(name: str) -> None:
    _KINDS.pop(name, None)


def kinds() -> list[str]:
    return list(_KINDS)


def get(name: str) -> PolicyKind:
    kind = _KINDS.get(name)
    if kind is None:
        raise DataError(f"unknown policy kind {name!r}; choose among {', '.join(_KINDS)}")
    return kind


def build(name: str, context: Context, params: Mapping[str, Any] | None = None
          ) -> list[Policy]:
    """The policies of a kind (``single`` gives one per model, the others one), unfitted."""
    kind = get(name)
    params = dict(params or {})
    recorded = context.train.confidence_signal if context.train is not None else None
    if recorded is not None and "signal" in parameters(name) and "signal" not in params:
        params["signal"] = recorded  # read live what the table recorded
    if kind.needs_confidence and context.train is not None \
            and not context.train.has("confidence"):
        raise DataError(f"{context.train.name} records no confidence to calibrate (collect "
                        f"one with `triage collect`), so a {name} policy cannot be fitted "
                        "on it")
    if kind.needs_text and context.train is not None and not context.train.has_text:
        raise DataError(f"{context.train.name} records no prompt text (a 'prompt' column), so "
                        f"a {name} router has nothing to route on: every prompt looks alike "
                        "to it (task-mean routes by task labels)")
    try:
        built = kind.build(context, checked(kind.cls, params))
    except TypeError as exc:  # an unknown or missing constructor argument
        accepted = ", ".join(parameters(name)) or "none"
        raise DataError(f"policy {name}: {exc} (its parameters: {accepted})") from None
    except ValueError as exc:
        raise DataError(f"policy {name}: {exc}") from None
    for policy in built:
        if policy.signal is not None and policy.signal not in policy.learned_signals:
            from llmtriage.signals.live import signal_named

            signal_named(policy.signal)  # a clear error now, not at the first request
    return built


def build_one(name: str, context: Context, params: Mapping[str, Any] | None = None) -> Policy:
    built = build(name, context, params)
    if len(built) != 1:
        raise DataError(f"policy {name} builds {len(built)} policies here; name one "
                        "(e.g. model=...)")
    return built[0]


def parameters(name: str) -> list[str]:
    """The parameter names a kind accepts (its constructor's, plus builder extras)."""
    kind = get(name)
    fixed = getattr(kind.build, "fixed", ())  # set by the kind itself (logistic vs mlp)
    names = [p for p in inspect.signature(kind.cls.__init__).parameters
             if p != "self" and p not in fixed]
    return names + [e for e in getattr(kind.build, "extras", ()) if e not in names]


def kind_of(policy: Policy) -> str:
    """The registered name of a policy object (its report family)."""
    name = policy.name
    if name not in _KINDS or not isinstance(policy, _KINDS[name].cls):
        raise DataError(f"{type(policy).__name__} is not a registered policy kind")
    return name


def parse_value(text: str) -> Any:
    """A parameter value from the command line or a header: JSON where it parses (numbers,
    lists, true/false), a comma list as a list of names, else the string itself."""
    from llmtriage.data.jsontext import loads

    try:
        return loads(text)
    except ValueError:
        pass
    if "," in text:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


# -- builders ---------------------------------------------------------------------------


def _plain(cls: type[Policy]) -> Builder:
    def build(context: Context, params: dict[str, Any]) -> list[Policy]:
        return [cls(**params)]

    return build


def _single(context: Context, params: dict[str, Any]) -> list[Policy]:
    from llmtriage.policies.baselines import SingleModel

    if "model" in params:
        return [SingleModel(**params)]
    return [SingleModel(m, **params) for m in context.models]


def _random(context: Context, params: dict[str, Any]) -> list[Policy]:
    from llmtriage.policies.baselines import RandomMix
    from llmtriage.policies.defaults import reference_pair

    if "weak" not in params or "strong" not in params:
        if context.train is None:
            raise ValueError("name its 'weak' and 'strong' models (no table to choose from)")
        weak, strong = reference_pair(context.train)
        params = {"weak": weak, "strong": strong, **params}
    return [RandomMix(**params)]


def _ladder(cls: type[Policy], searched: bool) -> Builder:
    def build(context: Context, params: dict[str, Any]) -> list[Policy]:
        from llmtriage.policies.search import best_ladder

        if "ladder" not in params:
            ladder = (best_ladder(context.train) if searched and context.train is not None
                      else list(context.models))
            params = {"ladder": ladder, **params}
        if isinstance(params["ladder"], str):
            params["ladder"] = [params["ladder"]]
        if len(params["ladder"]) < 1:
            raise ValueError("its ladder names no model")
        missing = [m for m in params["ladder"] if m not in context.models]
        if missing:
            raise ValueError(f"its ladder names {missing}, not among {list(context.models)}")
        return [cls(**params)]

    return build


def _with_embedder(cls: type[Policy], **fixed: Any) -> Builder:
    """Routers and the bandit take their query features by name (``embedder=hashing``)."""

    def build(context: Context, params: dict[str, Any]) -> list[Policy]:
        from llmtriage.signals.embedder import embedder_named

        embedder = params.pop("embedder", None)
        policy = cls(**fixed, **params)
        if embedder is not None:
            policy.embedder_ = embedder_named(str(embedder))
        return [policy]

    build.extras = ("embedder",)  # type: ignore[attr-defined]
    build.fixed = tuple(fixed)  # type: ignore[attr-defined]
    return build


def _cascade_routing(context: Context, params: dict[str, Any]) -> list[Policy]:
    from llmtriage.policies.cascades import CascadeRouter
    from llmtriage.policies.routers.base import QualityRouter

    router = params.pop("router", "knn")
    if isinstance(router, dict):  # {"kind": "knn", "k": 10}: a router with its parameters
        router = dict(router)
        router = build_one(str(router.pop("kind", "knn")), context, router)
    elif isinstance(router, str):
        router_params = {"embedder": params.pop("embedder")} if "embedder" in params else {}
        router = build_one(router, context, router_params)
    if not isinstance(router, QualityRouter):
        raise ValueError("its router must be a quality router (knn, logistic, mlp, mf, "
                         "sw-ranking, task-mean)")
    return [CascadeRouter(router, **params)]


_cascade_routing.extras = ("embedder",)  # type: ignore[attr-defined]


def _register_builtin() -> None:
    from llmtriage.policies.baselines import Oracle, RandomMix, SingleModel, ThresholdCascade
    from llmtriage.policies.cascades import AgreementCascade, CalibratedCascade, CascadeRouter
    from llmtriage.policies.routers import (
        ClassifierRouter,
        EloRouter,
        KNNRouter,
        LinUCBRouter,
        MFRouter,
        TaskRouter,
    )
    from llmtriage.policies.search import PolicySearch

    register("single", SingleModel, "always one model (one per model unless model= is given)",
             _single, default=True)
    register("oracle", Oracle, "the best model per prompt from gold outcomes (an upper bound)",
             default=True)
    register("random", RandomMix, "the strong model with probability p, else the weak one",
             _random, default=True)
    register("threshold-cascade", ThresholdCascade,
             "a ladder; accept the first answer whose raw confidence reaches the threshold",
             _ladder(ThresholdCascade, searched=False))
    register("calibrated-cascade", CalibratedCascade,
             "a ladder; accept the first answer right with at least the threshold probability",
             _ladder(CalibratedCascade, searched=True), needs_confidence=True, default=True)
    register("agreement-cascade", AgreementCascade,
             "answer and cheap voters; the fallback model answers when they disagree")
    register("knn", KNNRouter, "route by the outcomes of the k most similar prompts",
             _with_embedder(KNNRouter), needs_text=True)
    register("logistic", ClassifierRouter, "route by per-model logistic quality predictors",
             _with_embedder(ClassifierRouter, kind="logistic"), needs_text=True)
    register("mlp", ClassifierRouter, "route by per-model MLP quality predictors",
             _with_embedder(ClassifierRouter, kind="mlp"), needs_text=True)
    register("mf", MFRouter, "route by matrix factorisation of prompts x models",
             _with_embedder(MFRouter), needs_text=True)
    register("sw-ranking", EloRouter, "route by similarity-weighted Elo ratings",
             _with_embedder(EloRouter), needs_text=True)
    register("bandit", LinUCBRouter, "LinUCB: route and learn online from feedback",
             _with_embedder(LinUCBRouter), needs_text=True)
    register("task-mean", TaskRouter,
             "route by each model's mean quality on the query's task (its task label)")
    register("search", PolicySearch,
             "the cross-validated best policy of every family at each budget (policy search)")
    register("cascade-routing", CascadeRouter,
             "at each step any model or stop, by expected best belief minus cost",
             _cascade_routing, needs_confidence=True)


_register_builtin()
