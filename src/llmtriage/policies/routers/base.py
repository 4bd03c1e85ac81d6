"""Routers: predict each model's quality on a query, then pick one model, once.

Every router here is a :class:`QualityRouter`: it learns ``predict_quality(queries)`` (an
``(n, m)`` array) from a table's training split, and shares one selection rule:

- ``lam`` (willingness to pay, quality per USD): pick the model maximising predicted quality
  minus ``lam`` times its expected cost. ``lam = 0`` buys the best predicted model; a large
  ``lam`` the cheapest. Sweeping it traces the router's cost-quality curve.
- ``target``: if set, the cheapest model whose predicted quality reaches it (the best
  predicted model when none does).

Expected cost per model is its mean cost on the training split. Learned state ends in ``_``
and is saved as arrays plus JSON (see :mod:`llmtriage.policies.artifacts`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmtriage import metrics
from llmtriage.backends.base import Queries
from llmtriage.data.splits import kfold, same_text
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import STOP, Decision, Policy, State, resolve
from llmtriage.policies.params import Finite, NonNegative
from llmtriage.signals.embedder import Embedder, default_embedder, text_features


def quality_routers(policy: Policy) -> list[QualityRouter]:
    """The quality routers a policy decides with (itself, the policy it wraps, its members,
    a cascade routing's router): the parts that embed each query before a decision."""
    if isinstance(policy, QualityRouter):
        return [policy]
    parts = [getattr(policy, "policy", None), getattr(policy, "router", None),
             *getattr(policy, "members_", ())]
    return [r for part in parts if isinstance(part, Policy) for r in quality_routers(part)]


class QualityRouter(Policy):
    name = "router"
    requires_fit = True
    tradeoff = "lam"

    def __init__(self, lam: NonNegative = 0.0, target: Finite | None = None) -> None:
        self.lam = lam
        self.target = target

    # -- features ------------------------------------------------------------------------

    embedder_: Embedder | None = None

    def _embedder(self) -> Embedder:
        if self.embedder_ is None:
            self.embedder_ = default_embedder()
        return self.embedder_

    def with_embedder(self, embedder: Embedder) -> QualityRouter:
        """Take query features from ``embedder`` (kept across fits) instead of MiniLM."""
        self.embedder_ = embedder
        return self

    def features_suffix(self) -> str:
        """"" on the default features, else "/<embedder>" so that reports tell them apart."""
        if self.embedder_ is None or self.embedder_.name.startswith("all-MiniLM"):
            return ""
        return "/" + self.embedder_.name.split("-")[0]

    @property
    def curve_name(self) -> str:
        return self.name + self.features_suffix()

    def features(self, texts: np.ndarray) -> np.ndarray:
        """Embedding and standardised text features of each text."""
        emb = self._embedder().embed(list(texts))
        extra = (text_features(texts) - self.feature_mean_) / self.feature_scale_
        return np.hstack([emb, extra]).astype(np.float32)

    # -- learning ------------------------------------------------------------------------

    #: The hyperparameter that "auto" chooses, and the values tried.
    auto_param: str = ""
    auto_candidates: tuple = ()

    def fit(self, table: OutcomeTable, embedder: Embedder | None = None) -> QualityRouter:
        if embedder is not None:
            self.embedder_ = embedder
        extra = text_features(table.prompts)
        self.feature_mean_ = extra.mean(axis=0)
        self.feature_scale_ = extra.std(axis=0) + 1e-6
        self.models_ = table.models
        self.predictions_: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        cost = np.nan_to_num(table.cost_usd, nan=0.0)
        self.cost_ = cost.mean(axis=0)
        self.binary_ = bool(np.isin(table.quality, (0.0, 1.0)).all())
        x = self.features(table.prompts)
        value = getattr(self, self.auto_param) if self.auto_param else None
        if value == "auto":
            groups = same_text(table.prompts)
            self.cv_scores_ = {c: self._cv_aiq(x, table.quality, cost, c, groups)
                               for c in self.auto_candidates}
            value = max(self.cv_scores_, key=self.cv_scores_.get)
        self.chosen_ = value
        self._fit(x, table.quality, value)
        if hasattr(self.embedder_, "save_cache"):
            self.embedder_.save_cache()
        return self

    def _cv_aiq(self, x: np.ndarray, quality: np.ndarray, cost: np.ndarray, value: Any,
                groups: np.ndarray, folds: int = 3) -> float:
        """Mean AIQ of the router's lam curve on held-out folds of the training split: the
        hyperparameter is chosen for the metric the router is judged by."""
        scores = []
        for kept, held in kfold(len(x), folds, groups=groups):
            self._fit(x[kept], quality[kept], value)
            predicted = np.clip(self._predict(x[held]), 0.0, 1.0)
            q, c = quality[held], cost[held]
            points = [(c[np.arange(len(held)), pick].mean(), q[np.arange(len(held)), pick].mean())
                      for pick in (self.with_params(lam=lam).choose(predicted)
                                   for lam in self.grid(None))]
            singles = (c.mean(axis=0).min(), c.mean(axis=0).max())
            xs, ys = zip(*points, strict=True)
            scores.append(metrics.aiq(np.array(xs), np.array(ys), singles))
        return float(np.mean(scores))

    def out_of_fold(self, table: OutcomeTable, folds: int = 5) -> np.ndarray:
        """Each query's predicted quality from this router refitted without that query's fold,
        then refitted on all of ``table``: how wrong the router is on queries it has not
        seen (its predictions on its own training queries look far better than they are)."""
        x = self.features(table.prompts)
        out = np.empty(table.quality.shape)
        for kept, held in kfold(len(x), folds, groups=same_text(table.prompts)):
            self._fit(x[kept], table.quality[kept], self.chosen_)
            out[held] = np.clip(self._predict(x[held]), 0.0, 1.0)
        self._fit(x, table.quality, self.chosen_)
        self.predictions_.clear()
        return out

    def _fit(self, x: np.ndarray, quality: np.ndarray, value: Any) -> None:
        raise NotImplementedError

    def _predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_quality(self, queries: Queries | np.ndarray) -> np.ndarray:
        texts = queries.prompts if isinstance(queries, Queries) else np.asarray(queries)
        # Copies made for a sweep share this cache: the batch is predicted once, not per lam.
        hit = self.predictions_.get(id(texts))
        if hit is not None and hit[0] is texts:
            return hit[1]
        predicted = np.clip(self._predict(self.features(texts)), 0.0, 1.0)
        if len(self.predictions_) >= 4:
            self.predictions_.clear()
        self.predictions_[id(texts)] = (texts, predicted)
        return predicted

    # -- choosing ------------------------------------------------------------------------

    def choose(self, predicted: np.ndarray) -> np.ndarray:
        """Index (into ``models_``) of the model picked for each query."""
        if self.target is not None:
            ok = predicted >= self.target
            cheapest_ok = np.where(ok, self.cost_, np.inf).argmin(axis=1)
            return np.where(ok.any(axis=1), cheapest_ok, predicted.argmax(axis=1))
        utility = predicted - self.lam * self.cost_
        best = utility >= utility.max(axis=1, keepdims=True) - 1e-12
        return np.where(best, self.cost_, np.inf).argmin(axis=1)  # ties: the cheaper

    def step(self, state: State) -> Decision:
        calls = np.full(len(state.n_steps), STOP, dtype=np.int64)
        first = state.n_steps == 0
        if first.any():
            picked = self.choose(self.predict_quality(state.queries))
            calls[first] = resolve(state.models, list(self.models_))[picked][first]
        return Decision(calls)

    def grid(self, table: OutcomeTable | None) -> list[float]:
        """lam from 0 (best predicted model) to where the cheapest model always wins."""
        spread = float(self.cost_.max() - self.cost_.min())
        if spread <= 0:
            return [0.0]
        return [0.0, *(np.geomspace(1e-2, 1e2, 24) / spread).tolist()]
