"""Cascade routing (after Dekoninck et al., "A Unified Approach to Routing and Cascading for
LLMs"): at every step, call whichever model -- not only the next rung -- adds the most
expected quality per unit of cost, or stop.

Before any call, a router's predicted quality ``q_m`` stands for each model. Once a model
has answered, its calibrated confidence replaces the prediction. The value of the answers in
hand is the best calibrated confidence among them ``b``; calling model ``m`` is worth
``max(b, q_m) - b - lam * cost_m``; the policy calls the best positive one, or stops and
accepts the answer with the highest calibrated confidence (not necessarily the last).
``lam = 0`` keeps calling while anything might help; a large ``lam`` routes once.
"""

from __future__ import annotations

import numpy as np

from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import STOP, Decision, Policy, State, resolve
from llmtriage.policies.routers.base import QualityRouter
from llmtriage.signals.calibration import Calibrator


class CascadeRouter(Policy):
    name = "cascade-routing"
    tradeoff = "lam"

    def __init__(self, router: QualityRouter, lam: float = 0.0, method: str = "isotonic",
                 max_calls: int = 3) -> None:
        self.router = router
        self.lam = lam
        self.method = method
        self.max_calls = max_calls

    def fit(self, table: OutcomeTable) -> CascadeRouter:
        if not getattr(self.router, "frozen_", False):
            self.router.fit(table)
        self.calibrators_ = [
            Calibrator.fit(table.confidence[:, j], table.quality[:, j] >= 0.5, self.method)
            for j in range(table.n_models)
        ]
        self.models_ = table.models
        return self

    def grid(self, table: OutcomeTable) -> list[float]:
        return self.router.grid(table)

    def step(self, state: State) -> Decision:
        index = resolve(state.models, list(self.models_))
        predicted = self.router.predict_quality(state.queries)  # (b, m), cached per batch
        n, m = predicted.shape
        believed = predicted.copy()
        called = np.zeros((n, m), dtype=bool)
        calibrated = np.full((n, state.steps.width), -np.inf)
        for k in range(state.steps.width):
            model = state.steps.called[k]
            raw = state.steps.column("confidence", k)
            for j in range(m):
                sel = model == index[j]
                if sel.any():
                    p = self.calibrators_[j](raw[sel])
                    believed[sel, j] = p
                    called[sel, j] = True
                    calibrated[sel, k] = p
        best_held = np.where(called, believed, 0.0).max(axis=1)
        gain = np.maximum(best_held[:, None], predicted) - best_held[:, None]
        utility = np.where(called, -np.inf, gain - self.lam * self.router.cost_)
        pick = utility.argmax(axis=1)
        worth = utility[np.arange(n), pick] > 0
        first = state.n_steps == 0
        calls = np.where(worth | first, index[pick], STOP)
        calls[state.n_steps >= self.max_calls] = STOP
        accept = calibrated.argmax(axis=1) if state.steps.width else np.zeros(n, np.int64)
        return Decision(calls.astype(np.int64), accept.astype(np.int64))
