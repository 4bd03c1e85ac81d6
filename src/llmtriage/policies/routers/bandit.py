"""An online contextual bandit (LinUCB) that learns routing from quality feedback.

For live traffic with no labelled history, or with a drifting mix: each model keeps a ridge
regression of reward on the query's features, and the router calls the model with the
highest upper confidence bound ``theta_m . x + alpha * sqrt(x' A_m^-1 x) - lam * cost_m``.
Feedback (``observe``) updates one model's statistics in O(d^2) (Sherman-Morrison). The prior
is each model's mean quality on whatever table ``fit`` saw (zero to a few hundred rows is
fine): the router starts as the best single model and learns where others do better.
"""

from __future__ import annotations

import numpy as np

from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import STOP, Decision, Policy, State, resolve
from llmtriage.policies.params import Dimensions, NonNegative, Positive, Seed
from llmtriage.signals.embedder import Embedder, default_embedder, text_features


class LinUCBRouter(Policy):
    name = "bandit"
    requires_fit = True
    learns = True

    def __init__(self, alpha: NonNegative = 0.1, lam: NonNegative = 0.0, ridge: Positive = 10.0,
                 dims: Dimensions = 24, seed: Seed = 0) -> None:
        """``ridge`` is also the prior's weight, in pseudo-observations per model; ``dims``:
        the context's principal components, at most (a train split of n prompts has n)."""
        self.alpha = alpha
        self.lam = lam
        self.ridge = ridge
        self.dims = dims
        self.seed = seed

    embedder_: Embedder | None = None

    def fit(self, table: OutcomeTable, embedder: Embedder | None = None) -> LinUCBRouter:
        """Learn the feature map (a PCA of the embeddings) and the prior from ``table``."""
        self.embedder_ = embedder or self.embedder_ or default_embedder()
        raw = self._raw(table.prompts)
        self.center_ = raw.mean(axis=0)
        _, _, vt = np.linalg.svd(raw - self.center_, full_matrices=False)
        self.basis_ = vt[: self.dims].T.astype(np.float64)
        self.models_ = table.models
        self.cost_ = np.nan_to_num(table.cost_usd, nan=0.0).mean(axis=0)
        prior = table.quality.mean(axis=0)
        d = self.basis_.shape[1] + 1
        self.a_inv_ = np.stack([np.eye(d) / self.ridge for _ in self.models_])
        # b = ridge * prior * e_bias makes theta start at (prior, 0, ..., 0).
        self.b_ = np.zeros((len(self.models_), d))
        self.b_[:, -1] = self.ridge * prior
        self.pulls_ = np.zeros(len(self.models_), dtype=np.int64)
        return self

    def _raw(self, texts: np.ndarray) -> np.ndarray:
        assert self.embedder_ is not None
        return np.hstack([self.embedder_.embed(list(texts)), text_features(texts)])

    def context(self, texts: np.ndarray) -> np.ndarray:
        z = (self._raw(texts) - self.center_) @ self.basis_
        return np.hstack([z, np.ones((len(z), 1))])

    def choose(self, x: np.ndarray) -> np.ndarray:
        theta = np.einsum("mij,mj->mi", self.a_inv_, self.b_)  # (m, d)
        mean = x @ theta.T
        width = np.sqrt(np.einsum("bi,mij,bj->bm", x, self.a_inv_, x))
        return np.argmax(mean + self.alpha * width - self.lam * self.cost_, axis=1)

    def observe(self, x: np.ndarray, model: int, reward: float) -> None:
        """One piece of feedback: the quality the chosen model achieved on query x."""
        a_inv = self.a_inv_[model]
        ax = a_inv @ x
        a_inv -= np.outer(ax, ax) / (1.0 + x @ ax)
        self.b_[model] += reward * x
        self.pulls_[model] += 1

    def remember(self, prompt: str) -> np.ndarray:
        """The prompt's context vector (dims + 1 floats): all feedback needs of it."""
        return self.context(np.array([prompt], dtype=object))[0].astype(np.float32)

    def learn(self, prompt: str | np.ndarray, model: str, reward: float,
              previous: float | None = None) -> bool:
        """Feedback from live traffic (the gateway calls this); False if ``model`` is not
        one of the router's arms. A second score for the same response corrects the
        first (only the reward term moves), so the state is as if only the latest had
        been given."""
        if model not in self.models_:
            return False
        x = (self.remember(prompt) if isinstance(prompt, str) else prompt).astype(np.float64)
        arm = list(self.models_).index(model)
        if previous is None:
            self.observe(x, arm, reward)
        else:
            self.b_[arm] += (reward - previous) * x
        return True

    def step(self, state: State) -> Decision:
        calls = np.full(len(state.n_steps), STOP, dtype=np.int64)
        first = state.n_steps == 0
        if first.any():
            picked = self.choose(self.context(state.queries.prompts[first]))
            calls[first] = resolve(state.models, list(self.models_))[picked]
        return Decision(calls)
