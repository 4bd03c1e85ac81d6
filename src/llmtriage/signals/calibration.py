"""Turn a model's raw confidence score into the probability that its answer is right.

Raw scales differ by model (SmolLM2's mean logprobs sit far below Qwen's for answers of the
same quality), so one threshold on raw scores means different things per model. Each model
gets its own monotone map, fitted on a calibration split: isotonic regression (no shape
assumed) or Platt scaling (a logistic curve, steadier on few points). Saved as plain arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Calibrator:
    """A monotone map from raw score to P(correct), stored as knots (isotonic) or a, b
    (Platt: p = sigmoid(a * score + b))."""

    method: str
    x: np.ndarray
    y: np.ndarray
    #: P(correct) where the raw score is missing (no logprobs): the base rate. A score of
    #: -inf (an answer cut off at the token limit) maps to 0.
    base_rate: float

    @classmethod
    def fit(cls, scores: np.ndarray, correct: np.ndarray, method: str = "isotonic"
            ) -> Calibrator:
        scores = np.asarray(scores, dtype=np.float64)
        correct = np.asarray(correct, dtype=np.float64)
        ok = np.isfinite(scores)
        base = float(correct.mean()) if len(correct) else 0.5
        if ok.sum() < 5 or len(np.unique(correct[ok])) < 2:
            return cls(method, np.array([0.0]), np.array([base]), base)
        s, c = scores[ok], correct[ok]
        # Imported only to fit: applying a calibrator is numpy (a served policy never loads
        # scikit-learn).
        from sklearn.isotonic import IsotonicRegression
        from sklearn.linear_model import LogisticRegression

        if method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, c)
            return cls(method, iso.X_thresholds_.astype(np.float64),
                       iso.y_thresholds_.astype(np.float64), base)
        if method == "platt":
            lr = LogisticRegression(C=1e4).fit(s[:, None], (c >= 0.5).astype(int))
            return cls(method, np.array([float(lr.coef_[0, 0])]),
                       np.array([float(lr.intercept_[0])]), base)
        raise ValueError(f"method must be 'isotonic' or 'platt', not {method!r}")

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        raw = np.asarray(scores, dtype=np.float64)
        scores = np.where(np.isfinite(raw), raw, 0.0)
        if self.method == "platt" and len(self.x) == 1 and self.x[0] != 0.0:
            p = 1.0 / (1.0 + np.exp(-(self.x[0] * scores + self.y[0])))
        elif len(self.x) == 1:
            p = np.full(scores.shape, self.y[0])
        else:
            p = np.interp(scores, self.x, self.y)
        # -inf is a known-worthless answer (cut off at the token limit); NaN is no signal.
        return np.where(np.isfinite(raw), p, np.where(np.isneginf(raw), 0.0, self.base_rate))


def expected_calibration_error(p: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Mean |confidence - accuracy| over equal-width probability bins, weighted by size."""
    p, correct = np.asarray(p), np.asarray(correct)
    edges = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = edges == b
        if sel.any():
            total += sel.sum() * abs(p[sel].mean() - correct[sel].mean())
    return float(total / max(len(p), 1))
