"""Per-model quality predictors on embeddings and text features: logistic or a small MLP.

Binary outcomes (right/wrong) train classifiers and predict the probability of being right;
graded outcomes (judge scores) train regressors. One model per column, so any number of
models works and a new one is added without touching the others (see ``add_model``).
"""

from __future__ import annotations

import warnings

import numpy as np

from llmtriage.policies.params import Auto, Finite, NonNegative, Positive, Seed
from llmtriage.policies.routers.base import QualityRouter

#: Inverse regularisation strengths tried when ``c="auto"``.
C_CANDIDATES = (0.01, 0.1, 1.0)
HIDDEN = 64  # units of the MLP's one hidden layer
#: Fewer training rows than this fit the MLP without early stopping (its held-out tenth
#: would be too small to hold both classes).
MIN_EARLY_STOPPING_ROWS = 20
#: Where each per-model array of a predictor lives, stacked over models (first axis).
STACKED = {"w": "weights_", "b": "bias_", "w1": "w1_", "b1": "b1_", "w2": "w2_"}


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z) without overflow for large |z| (scipy's expit, in numpy)."""
    return np.exp(-np.logaddexp(0.0, -z))


class ClassifierRouter(QualityRouter):
    auto_param = "c"
    auto_candidates = C_CANDIDATES

    def __init__(self, kind: str = "logistic", c: Positive | Auto = "auto", lam: NonNegative = 0.0,
                 target: Finite | None = None, seed: Seed = 0) -> None:
        """``c``: inverse regularisation strength; "auto" picks it by cross-validated AIQ
        on the training split."""
        super().__init__(lam, target)
        if kind not in ("logistic", "mlp"):
            raise ValueError(f"kind must be 'logistic' or 'mlp', not {kind!r}")
        self.kind = kind
        self.c = c
        self.seed = seed

    @property
    def name(self) -> str:  # type: ignore[override]
        """The registered kind: "logistic" or "mlp"."""
        return self.kind

    def _estimator(self, binary: bool, c: float, rows: int):  # noqa: ANN202
        # scikit-learn is imported only to fit: a served router predicts with numpy alone,
        # and a gateway or CLI start does not pay the import (0.7 s).
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        if self.kind == "mlp":
            cls = MLPClassifier if binary else MLPRegressor
            # Early stopping holds out a tenth of the rows, which must hold both classes.
            return cls(hidden_layer_sizes=(HIDDEN,), alpha=1e-3 / c, max_iter=300,
                       early_stopping=rows >= MIN_EARLY_STOPPING_ROWS, random_state=self.seed)
        if binary:
            return LogisticRegression(C=c, max_iter=2000)
        return Ridge(alpha=1.0 / c)

    def _fit_column(self, x: np.ndarray, y: np.ndarray, c: float) -> dict[str, np.ndarray]:
        """One model's predictor as plain arrays, keyed as in :data:`STACKED`: (w, b) of a
        linear model, or the MLP's layers, so that any fitted router saves without pickle."""
        binary = self.binary_
        if binary and np.bincount(y.astype(int), minlength=2).min() < 3:
            # (almost) always right or always wrong on train: nothing to learn but the rate
            return self._constant(x.shape[1], _logit(y.mean()))
        from sklearn.exceptions import ConvergenceWarning

        est = self._estimator(binary, c, len(y))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(x, y)
        if self.kind == "mlp":
            return {"w1": est.coefs_[0].astype(np.float32),
                    "b1": est.intercepts_[0].astype(np.float32),
                    "w2": est.coefs_[1][:, 0].astype(np.float32),
                    "b": np.float32(est.intercepts_[1][0])}
        return {"w": np.ravel(est.coef_).astype(np.float32),
                "b": np.float32(np.ravel(est.intercept_)[0])}

    def _constant(self, d: int, value: float) -> dict[str, np.ndarray]:
        b = np.float32(value)
        if self.kind == "mlp":
            return {"w1": np.zeros((d, HIDDEN), np.float32), "b1": np.zeros(HIDDEN, np.float32),
                    "w2": np.zeros(HIDDEN, np.float32), "b": b}
        return {"w": np.zeros(d, np.float32), "b": b}

    def _fit(self, x: np.ndarray, quality: np.ndarray, c: float) -> None:
        cols = [self._fit_column(x, quality[:, j], float(c)) for j in range(quality.shape[1])]
        for key in cols[0]:
            setattr(self, STACKED[key], np.stack([col[key] for col in cols]))

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "mlp":  # scikit-learn's forward pass: relu hidden layer
            hidden = np.maximum(np.einsum("nd,mdh->mnh", x, self.w1_) + self.b1_[:, None], 0)
            z = np.einsum("mnh,mh->nm", hidden, self.w2_) + self.bias_
        else:
            z = x @ self.weights_.T + self.bias_
        return sigmoid(z) if self.binary_ else z

    def add_model(self, name: str, texts: np.ndarray, quality: np.ndarray, cost: float
                  ) -> ClassifierRouter:
        """Onboard a new model from a small labelled sample, leaving the others as trained."""
        x = self.features(texts)
        column = self._fit_column(x, np.asarray(quality, dtype=np.float64), float(self.chosen_))
        for key, value in column.items():
            stacked = getattr(self, STACKED[key])
            setattr(self, STACKED[key], np.concatenate([stacked, np.asarray(value)[None]]))
        self.models_ = (*self.models_, name)
        self.cost_ = np.append(self.cost_, cost)
        self.predictions_ = {}
        return self


def _logit(p: float) -> float:
    p = min(max(p, 1e-3), 1 - 1e-3)
    return float(np.log(p / (1 - p)))
