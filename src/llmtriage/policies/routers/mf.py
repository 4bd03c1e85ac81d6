"""Matrix factorisation of prompts x models, as in RouteLLM.

A prompt's features are projected to a small latent space and scored against a learned
vector per model: ``s(m, q) = w . (v_m * P x_q) + b_m``. It trains on pointwise outcomes
(``sigmoid(s)`` is the probability the model is right, or its graded quality) and on
pairwise preferences ("A beat B on this prompt", as in arena or MT-Bench judgements) through
the Bradley-Terry link ``P(A beats B) = sigmoid(s_A - s_B)``; ``pairwise`` weighs the two.
Full-batch Adam in numpy: a few seconds on thousands of prompts.
"""

from __future__ import annotations

import numpy as np

from llmtriage.data.table import OutcomeTable
from llmtriage.policies.params import (
    Auto,
    Dimensions,
    Finite,
    Iterations,
    NonNegative,
    Seed,
    Share,
)
from llmtriage.policies.routers.base import QualityRouter


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def preference_pairs(quality: np.ndarray) -> tuple[np.ndarray, ...]:
    """(prompt, a, b) for every pair of models whose outcomes differ, a the better one."""
    n, m = quality.shape
    rows, winners, losers = [], [], []
    for a in range(m):
        for b in range(m):
            better = quality[:, a] > quality[:, b]
            idx = np.flatnonzero(better)
            rows.append(idx)
            winners.append(np.full(len(idx), a))
            losers.append(np.full(len(idx), b))
    return np.concatenate(rows), np.concatenate(winners), np.concatenate(losers)


class MFRouter(QualityRouter):
    """``l2="auto"`` picks the weight decay by cross-validated AIQ on the train split."""

    name = "mf"
    auto_param = "l2"
    auto_candidates = (1e-3, 1e-2, 1e-1)

    def __init__(self, dim: Dimensions = 16, pairwise: Share = 0.5, l2: NonNegative | Auto = "auto",
                 epochs: Iterations = 200, lam: NonNegative = 0.0, target: Finite | None = None,
                 seed: Seed = 0) -> None:
        super().__init__(lam, target)
        self.dim = dim
        self.pairwise = pairwise
        self.l2 = l2
        self.epochs = epochs
        self.seed = seed

    def _fit(self, x: np.ndarray, quality: np.ndarray, l2: float) -> None:
        pairs = preference_pairs(quality) if self.pairwise > 0 else None
        self.fit_arrays(x, quality, pairs, float(l2))

    def fit_arrays(self, x: np.ndarray, quality: np.ndarray | None,
                   pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                   l2: float = 1e-2) -> None:
        """Train on pointwise outcomes, preference pairs (prompt, winner, loser), or both."""
        rng = np.random.default_rng(self.seed)
        n, d = x.shape
        m = quality.shape[1] if quality is not None else int(max(pairs[1].max(),
                                                                 pairs[2].max())) + 1
        params = {
            "proj_": rng.normal(0, 1 / np.sqrt(d), (self.dim, d)),
            "vecs_": rng.normal(0, 0.1, (m, self.dim)) + 1.0,
            "out_": rng.normal(0, 0.1, self.dim),
            "bias_": np.zeros(m),
        }
        if quality is not None:
            rate = np.clip(quality.mean(axis=0), 1e-3, 1 - 1e-3)
            params["bias_"] = np.log(rate / (1 - rate))
        moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
        w_point = 1.0 - self.pairwise if quality is not None else 0.0
        w_pair = self.pairwise if pairs is not None and len(pairs[0]) else 0.0
        for t in range(1, self.epochs + 1):
            hidden = x @ params["proj_"].T
            gated = hidden * params["out_"]
            scores = gated @ params["vecs_"].T + params["bias_"]
            grad_s = np.zeros_like(scores)
            if w_point:
                grad_s += w_point * (_sigmoid(scores) - quality) / quality.size
            if w_pair:
                i, a, b = pairs
                g = w_pair * (_sigmoid(scores[i, a] - scores[i, b]) - 1.0) / len(i)
                grad_s += (np.bincount(i * m + a, g, n * m)
                           - np.bincount(i * m + b, g, n * m)).reshape(n, m)
            grad_gated = grad_s @ params["vecs_"]
            grads = {
                "bias_": grad_s.sum(axis=0),
                "vecs_": grad_s.T @ gated + l2 * params["vecs_"],
                "out_": (grad_gated * hidden).sum(axis=0),
                "proj_": (grad_gated * params["out_"]).T @ x + l2 * params["proj_"],
            }
            for k, grad in grads.items():  # Adam
                m1, m2 = moments[k]
                m1 *= 0.9
                m1 += 0.1 * grad
                m2 *= 0.999
                m2 += 0.001 * grad**2
                step = 0.01 * (m1 / (1 - 0.9**t)) / (np.sqrt(m2 / (1 - 0.999**t)) + 1e-8)
                params[k] = params[k] - step
        for k, v in params.items():
            setattr(self, k, v.astype(np.float32))

    def scores(self, x: np.ndarray) -> np.ndarray:
        hidden = x @ self.proj_.T
        return (hidden * self.out_) @ self.vecs_.T + self.bias_

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(self.scores(x))

    def fit_preferences(self, table: OutcomeTable) -> MFRouter:
        """Train on preferences alone (who beat whom per prompt), ignoring absolute scores."""
        saved = self.pairwise
        self.pairwise = 1.0
        try:
            self.fit(table)
        finally:
            self.pairwise = saved
        return self
