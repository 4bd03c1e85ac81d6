"""Per-model quality predictors on embeddings and text features: logistic or a small MLP.

Binary outcomes (right/wrong) train classifiers and predict the probability of being right;
graded outcomes (judge scores) train regressors. One model per column, so any number of
models works and a new one is added without touching the others (see ``add_model``).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor

from llmtriage.policies.routers.base import QualityRouter

#: Inverse regularisation strengths tried when ``c="auto"``.
C_CANDIDATES = (0.01, 0.1, 1.0)


class ClassifierRouter(QualityRouter):
    name = "classifier"
    auto_param = "c"
    auto_candidates = C_CANDIDATES

    def __init__(self, kind: str = "logistic", c: float | str = "auto", lam: float = 0.0,
                 target: float | None = None, seed: int = 0) -> None:
        """``c``: inverse regularisation strength; "auto" picks it by cross-validated AIQ
        on the training split."""
        super().__init__(lam, target)
        if kind not in ("logistic", "mlp"):
            raise ValueError(f"kind must be 'logistic' or 'mlp', not {kind!r}")
        self.kind = kind
        self.c = c
        self.seed = seed

    @property
    def curve_name(self) -> str:
        return self.kind

    def _estimator(self, binary: bool, c: float):  # noqa: ANN202
        if self.kind == "mlp":
            cls = MLPClassifier if binary else MLPRegressor
            return cls(hidden_layer_sizes=(64,), alpha=1e-3 / c, max_iter=300,
                       early_stopping=True, random_state=self.seed)
        if binary:
            return LogisticRegression(C=c, max_iter=2000)
        return Ridge(alpha=1.0 / c)

    def _fit_column(self, x: np.ndarray, y: np.ndarray, c: float
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(weights, bias) of a linear model, or of the MLP's layers flattened."""
        binary = self.binary_
        if binary and np.bincount(y.astype(int), minlength=2).min() < 3:
            # (almost) always right or always wrong on train: nothing to learn but the rate
            return np.zeros(x.shape[1], np.float32), np.array([_logit(y.mean())], np.float32)
        est = self._estimator(binary, c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(x, y)
        if self.kind == "mlp":
            self.mlps_.append(est)
            return np.zeros(0, np.float32), np.zeros(1, np.float32)
        return np.ravel(est.coef_).astype(np.float32), np.ravel(est.intercept_)[:1].astype(
            np.float32)

    def _fit(self, x: np.ndarray, quality: np.ndarray, c: float) -> None:
        self.mlps_: list = []
        cols = [self._fit_column(x, quality[:, j], float(c)) for j in range(quality.shape[1])]
        self.weights_ = np.stack([w for w, _ in cols]) if self.kind == "logistic" else None
        self.bias_ = np.concatenate([b for _, b in cols])

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "mlp":
            cols = []
            for est in self.mlps_:
                cols.append(est.predict_proba(x)[:, 1] if self.binary_ else est.predict(x))
            return np.stack(cols, axis=1)
        z = x @ self.weights_.T + self.bias_
        return 1.0 / (1.0 + np.exp(-z)) if self.binary_ else z

    def add_model(self, name: str, texts: np.ndarray, quality: np.ndarray, cost: float
                  ) -> ClassifierRouter:
        """Onboard a new model from a small labelled sample, leaving the others as trained."""
        x = self.features(texts)
        w, b = self._fit_column(x, np.asarray(quality, dtype=np.float64), float(self.chosen_))
        if self.kind == "logistic":
            self.weights_ = np.vstack([self.weights_, w])
        self.bias_ = np.append(self.bias_, b)
        self.models_ = (*self.models_, name)
        self.cost_ = np.append(self.cost_, cost)
        self.predictions_ = {}
        return self

    def state_arrays(self) -> dict[str, np.ndarray]:
        if self.kind != "logistic":
            raise ValueError("only the logistic router saves as plain arrays; "
                             "refit the MLP router instead of loading it")
        return {**super().state_arrays(), "weights_": self.weights_, "bias_": self.bias_}

    def state_meta(self) -> dict:
        return {**super().state_meta(), "mlps_": []}


def _logit(p: float) -> float:
    p = min(max(p, 1e-3), 1 - 1e-3)
    return float(np.log(p / (1 - p)))
