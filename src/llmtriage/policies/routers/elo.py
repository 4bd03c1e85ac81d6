"""Similarity-weighted ranking (RouteLLM's "SW ranking"): Elo on pairwise outcomes, with
each training prompt's battles weighted by its similarity to the query.

For a query, every training prompt contributes its pairwise results ("A beat B") weighted by
``exp(temperature * cosine similarity)``; Bradley-Terry strengths are fitted to those
weighted battles (a few minorisation-maximisation steps, vectorised over the batch), and a
model's predicted quality is its expected win rate against the others. It needs only
preferences, so it trains on arena-style data as well as on graded outcomes.
"""

from __future__ import annotations

import numpy as np

from llmtriage.policies.params import Auto, Finite, Iterations, NonNegative, Positive
from llmtriage.policies.routers.base import QualityRouter


def battles(quality: np.ndarray) -> np.ndarray:
    """Per prompt, the (M, M) matrix of wins of row over column (ties count half)."""
    a, b = quality[:, :, None], quality[:, None, :]
    wins = (a > b).astype(np.float32) + 0.5 * (a == b)
    idx = np.arange(quality.shape[1])
    wins[:, idx, idx] = 0.0
    return wins


class EloRouter(QualityRouter):
    """``temperature="auto"`` picks the similarity sharpness by cross-validated AIQ."""

    name = "sw-ranking"
    auto_param = "temperature"
    auto_candidates = (2.0, 5.0, 10.0, 20.0)

    def __init__(self, temperature: Positive | Auto = "auto", iterations: Iterations = 30,
                 lam: NonNegative = 0.0, target: Finite | None = None) -> None:
        super().__init__(lam, target)
        self.temperature = temperature
        self.iterations = iterations

    def _fit(self, x: np.ndarray, quality: np.ndarray, temperature: float) -> None:
        self.keys_ = x[:, :-6].astype(np.float32)
        m = quality.shape[1]
        self.wins_ = battles(quality).reshape(len(x), m * m)
        self.temperature_ = float(temperature)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        m = int(np.sqrt(self.wins_.shape[1]))
        if m == 1:  # a lone model plays no one: nothing to rank
            return np.full((len(x), 1), 0.5, dtype=np.float32)
        out = np.empty((len(x), m), dtype=np.float32)
        for start in range(0, len(x), 1024):
            sims = x[start : start + 1024, :-6] @ self.keys_.T
            weights = np.exp(self.temperature_ * (sims - sims.max(axis=1, keepdims=True)))
            won = (weights @ self.wins_).reshape(-1, m, m) / weights.sum(1)[:, None, None]
            won += 0.05  # a little prior: every pair drawn once, keeps strengths finite
            idx = np.arange(m)
            won[:, idx, idx] = 0.0
            games = won + won.transpose(0, 2, 1)
            strength = np.ones((len(won), m))
            for _ in range(self.iterations):  # Bradley-Terry by minorisation-maximisation
                denom = (games / (strength[:, :, None] + strength[:, None, :])).sum(axis=2)
                strength = won.sum(axis=2) / np.maximum(denom, 1e-12)
                strength /= strength.sum(axis=1, keepdims=True)
            p = strength[:, :, None] / (strength[:, :, None] + strength[:, None, :])
            p[:, idx, idx] = 0.0
            out[start : start + 1024] = p.sum(axis=2) / max(m - 1, 1)
        return out
