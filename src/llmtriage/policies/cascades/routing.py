"""Cascade routing (Dekoninck et al., "A Unified Approach to Routing and Cascading for
LLMs", 2024): at every step, choose the *set* of further models worth running, call the
cheapest of them, or stop.

What each model's answer is worth is a belief that it is right:

- *before* a model is called, the router's predicted quality ``q_m``, and how far the belief
  will move once the answer is seen: a Beta distribution with mean ``q_m`` (so one model alone
  is worth exactly its prediction, and a single call is the router's choice), its spread
  matched to how far beliefs moved from the router's out-of-fold predictions on the training
  split (on its own training queries the router looks too good);
- *after* it answered, the ex-post belief: a per-model logistic model of "right" on the
  router's prediction and the answer's calibrated confidence (both out-of-fold while it is
  fitted), so a model without a confidence signal still carries the router's view.

Running a set ``S`` of further models is worth ``E[max(b, B_m for m in S)] - lam * cost(S)``,
where ``b`` is the best belief in hand and ``B_m`` the beliefs the calls would produce. The
expectation is what makes cascading pay: a cheap model whose answer may turn out certain has
an option value above its mean prediction, so it is tried first on queries where that is
likely, and skipped where it is not. The policy calls the cheapest model of the best set
(stopping when the empty set is best) and finally accepts the answer it believes most in.
``lam = 0`` runs whatever might help; a large ``lam`` routes once. Beliefs are only as good
as the confidence signal: with weak signals, extra calls and picking the most believed
answer can cost more than they bring (see bench/cascades_offline.py).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy.special import betaincinv
from sklearn.linear_model import LogisticRegression

from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import STOP, Decision, Policy, State, resolve
from llmtriage.policies.routers.base import QualityRouter
from llmtriage.signals.calibration import Calibrator


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


class CascadeRouter(Policy):
    name = "cascade-routing"
    tradeoff = "lam"

    def __init__(self, router: QualityRouter, lam: float = 0.0, method: str = "isotonic",
                 max_calls: int = 3, samples: int = 32) -> None:
        self.router = router
        self.lam = lam
        self.method = method
        self.max_calls = max_calls
        self.samples = samples

    def fit(self, table: OutcomeTable) -> CascadeRouter:
        if getattr(self.router, "frozen_", False):  # a loaded artifact: use it as it is
            predicted = self.router.predict_quality(table.prompts)
        else:
            self.router.fit(table)
            predicted = self.router.out_of_fold(table)
        right = table.quality >= 0.5
        m = table.n_models
        self.calibrators_ = [Calibrator.fit(table.confidence[:, j], right[:, j], self.method)
                             for j in range(m)]
        calibrated = self._out_of_fold_calibrated(table.confidence, right)
        self.ex_post_ = np.zeros((m, 3))  # per model: weights on logit(q), logit(conf), bias
        self.concentration_ = np.zeros(m)
        for j in range(m):
            x = self._ex_post_features(predicted[:, j], calibrated[:, j])
            if right[:, j].all() or not right[:, j].any():
                self.ex_post_[j] = [1.0, 0.0, 0.0]
            else:
                fit = LogisticRegression(C=1.0).fit(x, right[:, j])
                self.ex_post_[j] = [*fit.coef_[0], fit.intercept_[0]]
            # Beliefs spread around the prediction as Beta(q k, (1 - q) k): mean q, so a model
            # alone is worth exactly its prediction (one call is the router's choice), and
            # variance q (1 - q) / (k + 1), matched to how far beliefs moved from it here.
            moved = np.mean((self._belief(j, x) - predicted[:, j]) ** 2)
            room = np.mean(predicted[:, j] * (1 - predicted[:, j]))
            self.concentration_[j] = max(room / max(moved, 1e-9) - 1.0, 1e-3)
        # Fixed quantile levels, shuffled per model, so that models' draws pair up
        # independently; the draws for a batch are kept for the copies a sweep makes.
        rng = np.random.default_rng(0)
        self.levels_ = np.stack([rng.permutation((np.arange(self.samples) + 0.5) / self.samples)
                                 for _ in range(m)])
        self.draws_: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.models_ = table.models
        self.order_ = np.argsort(self.router.cost_, kind="stable")
        self.sets_ = [s for size in range(1, min(self.max_calls, m) + 1)
                      for s in combinations(self.order_.tolist(), size)]
        return self

    def _out_of_fold_calibrated(self, confidence: np.ndarray, right: np.ndarray,
                                folds: int = 5) -> np.ndarray:
        """Each query's calibrated confidence from calibrators fitted without it: fitted on
        the same queries, isotonic calibration looks sharper than it is, and the ex-post
        model would trust it too much."""
        order = np.random.default_rng(1).permutation(len(confidence))
        out = np.empty(confidence.shape)
        for f in range(folds):
            held = order[f::folds]
            kept = np.setdiff1d(order, held)
            for j in range(confidence.shape[1]):
                out[held, j] = Calibrator.fit(confidence[kept, j], right[kept, j],
                                              self.method)(confidence[held, j])
        return out

    @staticmethod
    def _ex_post_features(predicted: np.ndarray, calibrated: np.ndarray) -> np.ndarray:
        return np.column_stack([_logit(predicted), _logit(calibrated)])

    def _belief(self, j: int, x: np.ndarray) -> np.ndarray:
        w = self.ex_post_[j]
        return 1.0 / (1.0 + np.exp(-(x @ w[:2] + w[2])))

    def _draws(self, predicted: np.ndarray) -> np.ndarray:
        hit = self.draws_.get(id(predicted))
        if hit is not None and hit[0] is predicted:
            return hit[1]
        q = np.clip(predicted, 1e-4, 1 - 1e-4)[:, :, None]
        k = self.concentration_[None, :, None]
        draws = betaincinv(q * k, (1 - q) * k, self.levels_[None])
        if len(self.draws_) >= 4:
            self.draws_.clear()
        self.draws_[id(predicted)] = (predicted, draws)
        return draws

    def grid(self, table: OutcomeTable) -> list[float]:
        return self.router.grid(table)

    def step(self, state: State) -> Decision:
        index = resolve(state.models, list(self.models_))
        predicted = self.router.predict_quality(state.queries)  # (b, m), cached per batch
        n, m = predicted.shape
        called = np.zeros((n, m), dtype=bool)
        beliefs = np.full((n, state.steps.width), -np.inf)
        for k in range(state.steps.width):
            model = state.steps.called[k]
            raw = state.steps.column("confidence", k)
            for j in range(m):
                sel = model == index[j]
                if sel.any():
                    x = self._ex_post_features(predicted[sel, j], self.calibrators_[j](raw[sel]))
                    beliefs[sel, k] = self._belief(j, x)
                    called[sel, j] = True
        held = np.maximum(beliefs.max(axis=1, initial=-np.inf), 0.0)
        draws = self._draws(predicted)  # (n, m, K): what each model's belief may turn out
        room = self.max_calls - state.n_steps
        first = state.n_steps == 0
        # Stopping is worth what is in hand; a query with nothing in hand must call something.
        best = np.where(first, -np.inf, held)
        calls = np.full(n, STOP, dtype=np.int64)
        for chosen in self.sets_:
            cols = list(chosen)
            worth = np.maximum(held, draws[:, cols, :].max(axis=1).T).mean(axis=0)
            worth = worth - self.lam * float(self.router.cost_[cols].sum())
            better = (worth > best) & ~called[:, cols].any(axis=1) & (room >= len(cols))
            best[better] = worth[better]
            calls[better] = index[cols[0]]  # sets list their models cheapest first
        accept = beliefs.argmax(axis=1) if state.steps.width else np.zeros(n, np.int64)
        return Decision(calls, accept.astype(np.int64))
