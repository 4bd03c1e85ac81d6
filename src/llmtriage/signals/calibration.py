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

    def __call__(self, scores: np.ndarray, tasks: np.ndarray | None = None) -> np.ndarray:
        """P(right) of each score; ``tasks`` is not read (one map for every task), and
        taken so that this and a :class:`TaskCalibrator` are called alike."""
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


#: The fewest rows a task needs for a map of its own (fewer: the pooled map serves it), so
#: that a task column holding an id per prompt makes no map per prompt.
MIN_TASK_ROWS = 10
#: How many pooled rows a task's own calibration is weighed against by default: a task of
#: 30 rows counts half, of 270 nine tenths (on the ladder's recording, about 35 training
#: rows a task, 10 to 100 gave the same test AUC within 0.005).
TASK_PRIOR_ROWS = 30.0


def fit_calibrator(scores: np.ndarray, correct: np.ndarray, tasks: np.ndarray,
                   method: str = "isotonic", task_prior_rows: float | None = TASK_PRIOR_ROWS
                   ) -> Calibrator | TaskCalibrator:
    """A model's calibration: per task (see :class:`TaskCalibrator`) unless
    ``task_prior_rows`` is None, then one map for every task. Both are called alike."""
    if task_prior_rows is None:
        return Calibrator.fit(scores, correct, method)
    return TaskCalibrator.fit(scores, correct, tasks, method, task_prior_rows)


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


@dataclass
class TaskCalibrator:
    """One model's calibration that knows the task a query belongs to.

    The same raw score means different things on different tasks (a mean logprob of -0.2 is
    a safe multiple-choice letter and a shaky chain of arithmetic), and one map fitted on a
    mix of tasks blurs them. Each task the calibration split holds gets its own map, blended
    with the pooled one by its share of evidence, ``n / (n + prior_rows)``, so a task seen
    on a few rows leans on the pool. A query of a task not seen (or seen on fewer than
    :data:`MIN_TASK_ROWS` rows, or none, as a live query without a task label) gets the
    pooled map alone: exactly the task-blind calibration."""

    pooled: Calibrator
    by_task: dict[str, Calibrator]
    #: The weight of each task's own map against the pooled one.
    weights: dict[str, float]

    @classmethod
    def fit(cls, scores: np.ndarray, correct: np.ndarray, tasks: np.ndarray,
            method: str = "isotonic", prior_rows: float = TASK_PRIOR_ROWS) -> TaskCalibrator:
        tasks = np.asarray(tasks).astype(str)
        pooled = Calibrator.fit(scores, correct, method)
        by_task, weights = {}, {}
        names, counts = np.unique(tasks, return_counts=True)
        if len(names) > 1:  # one task: its own map is the pooled one
            for task, n in zip(names.tolist(), counts.tolist(), strict=True):
                if task and n >= MIN_TASK_ROWS:
                    rows = tasks == task
                    by_task[task] = Calibrator.fit(scores[rows], correct[rows], method)
                    weights[task] = float(n / (n + prior_rows))
        return cls(pooled, by_task, weights)

    def __call__(self, scores: np.ndarray, tasks: np.ndarray | None = None) -> np.ndarray:
        """P(right) of each score given its query's task (None: no task known)."""
        out = self.pooled(scores)
        if tasks is None:
            return out
        tasks = np.asarray(tasks).astype(str)
        for task in np.unique(tasks).tolist():
            own = self.by_task.get(task)
            if own is not None:
                rows = tasks == task
                w = self.weights[task]
                out[rows] = w * own(np.asarray(scores)[rows]) + (1 - w) * out[rows]
        return out
