"""Cascade routing (Dekoninck et al., "A Unified Approach to Routing and Cascading for
LLMs", 2024): at every step, choose the *set* of further models worth running, call the
cheapest of them, or stop.

What each model's answer is worth is a belief that it is right:

- *before* a model is called, the router's predicted quality ``q_m``, and how far the belief
  may move once the answer is seen: the moves seen on the training split, from the router's
  out-of-fold predictions (on its own training queries the router looks too good), per band
  of predictions and centred, so one model alone is worth exactly its prediction and a single
  call is the router's choice;
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

from llmtriage.data.splits import kfold
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import STOP, Decision, Policy, State, check_signal, resolve
from llmtriage.policies.defaults import near_hull
from llmtriage.policies.params import Count, NonNegative, Resolution
from llmtriage.policies.routers.base import QualityRouter
from llmtriage.signals.calibration import TASK_PRIOR_ROWS, fit_calibrator

#: The most models whose sets (of up to ``max_calls``) a step weighs: those nearest the
#: cost-quality hull. All of them below this; above it the sets grow as the cube of the
#: models (300 models: 4.5 million sets a step, hours a search).
MAX_SET_MODELS = 12


def _mean_rank_correlation(moves: np.ndarray) -> float:
    """How much models' beliefs move together (a query hard for one is often hard for all):
    the mean pairwise rank correlation of the moves, in [0, 0.95]."""
    m = moves.shape[1]
    if m < 2:
        return 0.0
    ranks = np.argsort(np.argsort(moves, axis=0), axis=0).astype(np.float64)
    c = np.corrcoef(ranks, rowvar=False)
    c = np.nan_to_num(c[~np.eye(m, dtype=bool)])
    return float(np.clip(c.mean(), 0.0, 0.95))


def _correlated_ranks(m: int, samples: int, rho: float) -> np.ndarray:
    """(m, samples): each model's row a permutation of 0..samples-1 (so every quantile of its
    moves is used once, and its mean belief stays its prediction), rows rank-correlated by
    about ``rho`` (a one-factor Gaussian copula). Independent draws would overstate what
    calling one more model can add."""
    rng = np.random.default_rng(0)
    shared = rng.standard_normal(samples)
    own = rng.standard_normal((m, samples))
    factor = np.sqrt(rho) * shared + np.sqrt(1 - rho) * own
    return np.argsort(np.argsort(factor, axis=1), axis=1)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


class CascadeRouter(Policy):
    name = "cascade-routing"
    requires_fit = True
    tradeoff = "lam"

    def __init__(self, router: QualityRouter, lam: NonNegative = 0.0,
                 method: str = "isotonic", max_calls: Count = 3, samples: Resolution = 32,
                 bins: Resolution = 5,
                 signal: str = "mean_logprob",
                 task_prior_rows: NonNegative | None = TASK_PRIOR_ROWS) -> None:
        """``signal``: the statistic the table's confidence column records, fed live;
        ``task_prior_rows``: calibrate the confidence per task, as the calibrated cascade
        does (see :class:`TaskCalibrator`); None: one calibration for every task."""
        self.router = router
        self.task_prior_rows = task_prior_rows
        self.signal = signal
        self.lam = lam
        self.method = method
        self.max_calls = max_calls
        self.samples = samples
        self.bins = bins

    def fit(self, table: OutcomeTable) -> CascadeRouter:
        check_signal(self, table)
        if getattr(self.router, "frozen_", False):  # a loaded artifact: use it as it is
            predicted = self.router.predict_quality(table.prompts)
        else:
            self.router.fit(table)
            predicted = self.router.out_of_fold(table)
        right = table.quality >= 0.5
        m = table.n_models
        self.calibrators_ = [fit_calibrator(table.confidence[:, j], right[:, j], table.tasks,
                                            self.method, self.task_prior_rows)
                             for j in range(m)]
        calibrated = self._out_of_fold_calibrated(table.confidence, right, table.tasks)
        self.ex_post_ = np.zeros((m, 3))  # per model: weights on logit(q), logit(conf), bias
        moves = np.zeros(predicted.shape)
        from sklearn.linear_model import LogisticRegression  # to fit only (see calibration)

        for j in range(m):
            x = self._ex_post_features(predicted[:, j], calibrated[:, j])
            if right[:, j].all() or not right[:, j].any():
                self.ex_post_[j] = [1.0, 0.0, 0.0]
            else:
                fit = LogisticRegression(C=1.0).fit(x, right[:, j])
                self.ex_post_[j] = [*fit.coef_[0], fit.intercept_[0]]
            moves[:, j] = self._belief(j, x) - predicted[:, j]
        self._fit_moves(predicted, moves)
        self.draws_: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.models_ = table.models
        self.order_ = np.argsort(self.router.cost_, kind="stable")
        pool = sorted(near_hull(table, MAX_SET_MODELS), key=self.order_.tolist().index)
        self.sets_ = [s for size in range(1, min(self.max_calls, m) + 1)
                      for s in combinations(pool, size)]
        return self

    def _fit_moves(self, predicted: np.ndarray, moves: np.ndarray) -> None:
        """How far a belief moves from the prediction once the answer is seen, per model and
        per band of predictions (a confident prediction has less room to move): the moves'
        quantiles, centred, so that a model alone is worth exactly its prediction. Their
        order across models follows how much models' moves go together."""
        m = predicted.shape[1]
        levels = (np.arange(self.samples) + 0.5) / self.samples
        self.edges_ = np.quantile(predicted, np.linspace(0, 1, self.bins + 1), axis=0).T
        self.moves_ = np.zeros((m, self.bins, self.samples))
        for j in range(m):
            band = self._band(j, predicted[:, j])
            for b in range(self.bins):
                here = moves[band == b, j]
                if len(here):
                    shape = np.quantile(here, levels)
                    self.moves_[j, b] = shape - shape.mean()
        self.correlation_ = _mean_rank_correlation(moves)
        ranks = _correlated_ranks(m, self.samples, self.correlation_)
        self.moves_ = np.take_along_axis(self.moves_, ranks[:, None, :], axis=2)

    def _band(self, j: int, predicted: np.ndarray) -> np.ndarray:
        inner = self.edges_[j, 1:-1]
        return np.searchsorted(inner, predicted, side="right")

    def _out_of_fold_calibrated(self, confidence: np.ndarray, right: np.ndarray,
                                tasks: np.ndarray, folds: int = 5) -> np.ndarray:
        """Each query's calibrated confidence from calibrators fitted without it: fitted on
        the same queries, isotonic calibration looks sharper than it is, and the ex-post
        model would trust it too much."""
        out = np.empty(confidence.shape)
        for kept, held in kfold(len(confidence), folds, seed=1):
            for j in range(confidence.shape[1]):
                calibrate = fit_calibrator(confidence[kept, j], right[kept, j], tasks[kept],
                                           self.method, self.task_prior_rows)
                out[held, j] = calibrate(confidence[held, j], tasks[held])
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
        draws = np.empty((*predicted.shape, self.samples))
        for j in range(predicted.shape[1]):
            shifts = self.moves_[j][self._band(j, predicted[:, j])]  # (n, K)
            draws[:, j] = np.clip(predicted[:, j, None] + shifts, 0.0, 1.0)
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
                    x = self._ex_post_features(
                        predicted[sel, j],
                        self.calibrators_[j](raw[sel], state.queries.tasks[sel]))
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
