"""k-nearest neighbours: a query's models do as well as they did on similar prompts."""

from __future__ import annotations

import numpy as np

from llmtriage.policies.params import Auto, Count, Finite, NonNegative
from llmtriage.policies.routers.base import QualityRouter

#: Neighbourhood sizes tried when ``k="auto"``.
K_CANDIDATES = (5, 10, 25, 50, 100)


class KNNRouter(QualityRouter):
    """``k="auto"`` picks k by cross-validated AIQ on the training split."""

    name = "knn"
    auto_param = "k"
    auto_candidates = K_CANDIDATES

    def __init__(self, k: Count | Auto = "auto", lam: NonNegative = 0.0,
                 target: Finite | None = None
                 ) -> None:
        super().__init__(lam, target)
        self.k = k

    def _fit(self, x: np.ndarray, quality: np.ndarray, k: int) -> None:
        # Cosine similarity on the (normalised) embedding part only.
        self.keys_ = x[:, :-6].astype(np.float32)
        self.values_ = quality.astype(np.float32)
        self.prior_ = quality.mean(axis=0).astype(np.float32)
        self.k_ = int(k)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        k = min(self.k_, len(self.keys_))
        x = x[:, :-6]
        out = np.empty((len(x), self.values_.shape[1]), dtype=np.float32)
        for start in range(0, len(x), 2048):  # bounded memory for big batches
            sims = x[start : start + 2048] @ self.keys_.T
            nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            weights = np.maximum(np.take_along_axis(sims, nearest, axis=1), 0.0) + 1e-3
            votes = self.values_[nearest]  # (b, k, m)
            # A light prior keeps a sparse neighbourhood from swinging to 0 or 1.
            out[start : start + 2048] = ((weights[..., None] * votes).sum(1) + self.prior_) / (
                weights.sum(1, keepdims=True) + 1.0)
        return out
