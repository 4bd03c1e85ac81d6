"""A cascade whose thresholds are probabilities of being right, not raw scores.

Each rung's raw confidence (a logprob statistic, a learned scorer's output) goes through
that model's own calibrator, fitted on a calibration split, so a threshold of 0.8 means
"accept when this answer is right 80% of the time" on every rung.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import State
from llmtriage.policies.baselines import ThresholdCascade
from llmtriage.signals.calibration import Calibrator


class CalibratedCascade(ThresholdCascade):
    name = "calibrated-cascade"
    requires_fit = True

    def __init__(self, ladder: Sequence[str], threshold: float | Sequence[float] = 0.8,
                 method: str = "isotonic", signal: str = "mean_logprob") -> None:
        """``signal``: the statistic the table's confidence column records (`triage
        collect` records the mean token logprob), fed live to the same calibrators."""
        super().__init__(ladder, threshold, signal)
        self.method = method
        if not np.all((np.asarray(threshold) >= 0.0) & (np.asarray(threshold) <= 1.01)):
            raise ValueError("its threshold is a probability of being right, between 0 and "
                             f"1, not {threshold}")

    def fit(self, table: OutcomeTable) -> CalibratedCascade:
        super().fit(table)
        self.calibrators_ = {
            m: Calibrator.fit(table.confidence[:, table.model_index(m)],
                              table.quality[:, table.model_index(m)] >= 0.5, self.method)
            for m in self.ladder
        }
        return self

    def grid(self, table: OutcomeTable) -> list[float]:
        return np.linspace(0.0, 1.0, 21).tolist() + [1.01]

    def confidence(self, state: State) -> np.ndarray:
        raw = state.last("confidence")
        last = state.last_model()
        out = np.full(len(raw), np.nan)
        for name, calibrate in self.calibrators_.items():
            if name in state.models:
                sel = last == state.models.index(name)
                out[sel] = calibrate(raw[sel])
        return out
