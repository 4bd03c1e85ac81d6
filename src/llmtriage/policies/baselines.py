"""The reference points every router and cascade is compared against."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from llmtriage.data.splits import unit_hash
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import STOP, Decision, Policy, State, check_signal, resolve
from llmtriage.policies.params import Finite, NonNegative, Seed, Share


def _once(state: State, model: np.ndarray | int) -> Decision:
    """Call the given model(s) on the first step, then stop and accept that answer."""
    calls = np.empty(len(state.n_steps), dtype=np.int64)
    calls[:] = model
    calls[state.n_steps > 0] = STOP
    return Decision(calls)


class SingleModel(Policy):
    """Always the same model: one point of the "zero router" hull."""

    name = "single"

    def __init__(self, model: str) -> None:
        self.model = model

    @property
    def label(self) -> str:
        return self.model

    def step(self, state: State) -> Decision:
        return _once(state, resolve(state.models, self.model)[0])


class RandomMix(Policy):
    """Call ``strong`` with probability ``p``, else ``weak`` (RouteLLM's random router).

    The coin is a hash of the prompt's text and the seed, so a query gets the same model
    every time it is replayed or served (a live request has no recorded prompt id).
    """

    name = "random"
    tradeoff = "p"

    def __init__(self, weak: str, strong: str, p: Share = 0.5, seed: Seed = 0) -> None:
        self.weak = weak
        self.strong = strong
        self.p = p
        self.seed = seed

    def grid(self, table: OutcomeTable) -> list[float]:
        return np.linspace(0.0, 1.0, 11).tolist()

    def step(self, state: State) -> Decision:
        weak, strong = resolve(state.models, [self.weak, self.strong])
        u = unit_hash(state.queries.prompts, self.seed, purpose="random")
        return _once(state, np.where(u < self.p, strong, weak))


class Oracle(Policy):
    """Per prompt, the model maximising recorded quality minus ``lam`` times its cost; among
    ties, the cheapest. At ``lam = 0`` that is the cheapest correct (best) model.

    An upper bound, not a servable policy: it reads the gold outcomes of the prompts it is
    asked about, looked up by prompt id in the table given to ``fit``. Sweeping ``lam``
    traces the best cost-quality curve any router could reach.
    """

    name = "oracle"
    tradeoff = "lam"
    #: Fitted on the evaluated prompts themselves, not on the training split.
    reads_gold = True
    requires_fit = True

    def __init__(self, lam: NonNegative = 0.0) -> None:
        self.lam = lam

    def fit(self, table: OutcomeTable) -> Oracle:
        self.quality_ = table.quality
        self.cost_ = np.nan_to_num(table.cost_usd, nan=0.0)
        self.models_ = table.models
        self.index_ = pd.Index(table.prompt_ids)
        return self

    def grid(self, table: OutcomeTable) -> list[float]:
        positive = self.cost_[self.cost_ > 0]
        if positive.size == 0:
            return [0.0]
        scale = 1.0 / float(np.median(positive))
        return [0.0, *(np.geomspace(1e-3, 1e2, 20) * scale).tolist()]

    def step(self, state: State) -> Decision:
        rows = self.index_.get_indexer(state.queries.prompt_ids)
        if (rows < 0).any():
            raise ValueError("the oracle was asked about prompts absent from its table")
        q, c = self.quality_[rows], self.cost_[rows]
        score = q - self.lam * c
        best = score >= score.max(axis=1, keepdims=True) - 1e-12
        choice = np.where(best, c, np.inf).argmin(axis=1)
        return _once(state, resolve(state.models, list(self.models_))[choice])


class ThresholdCascade(Policy):
    """Call the ladder's models in order; accept the first answer whose recorded confidence
    reaches the threshold of its stage, and the last model's answer regardless."""

    name = "threshold-cascade"
    tradeoff = "threshold"

    def __init__(self, ladder: Sequence[str], threshold: Finite | Sequence[Finite] = -0.5,
                 signal: str = "min_logprob") -> None:
        """``signal``: the confidence its answers are judged by live (see
        :mod:`llmtriage.signals.live`); offline, the table's recorded confidence, which must
        be that statistic. The default threshold suits the least likely token's logprob: an
        answer with no token less likely than e^-0.5 = 0.61 is accepted."""
        self.ladder = tuple(ladder)
        self.threshold = threshold
        self.signal = signal

    def fit(self, table: OutcomeTable) -> ThresholdCascade:
        check_signal(self, table)
        first = table.confidence[:, table.model_index(self.ladder[0])]
        self.first_confidence_ = first[np.isfinite(first)]
        return self

    def grid(self, table: OutcomeTable) -> list[float]:
        """Thresholds at quantiles of the first stage's confidence (from ``fit``), so the
        curve spans every share of escalation from none to all."""
        conf = getattr(self, "first_confidence_", None)
        if conf is None or conf.size == 0:
            return [0.5]
        qs = np.quantile(conf, np.linspace(0.0, 1.0, 21))
        return sorted({float(x) for x in qs} | {float(np.nextafter(conf.max(), np.inf))})

    def thresholds(self) -> np.ndarray:
        stages = len(self.ladder) - 1
        t = np.broadcast_to(np.asarray(self.threshold, dtype=np.float64), (stages,))
        return np.append(t, -np.inf)  # the last stage always accepts

    def confidence(self, state: State) -> np.ndarray:
        """The score each query's latest answer is judged by (here: as recorded)."""
        return state.last("confidence")

    def step(self, state: State) -> Decision:
        ladder = resolve(state.models, self.ladder)
        k = state.n_steps
        thresholds = self.thresholds()
        # The stage a query is at is its step count; past the ladder it has run out of rungs.
        stage = np.minimum(k, len(ladder))
        accept_at = np.append(np.inf, thresholds)[stage]  # before any call: never accept
        done = self.confidence(state) >= accept_at
        calls = np.append(ladder, STOP)[stage]
        calls[done] = STOP
        return Decision(calls)
