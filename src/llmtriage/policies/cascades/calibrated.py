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
from llmtriage.policies.params import Finite, NonNegative
from llmtriage.signals.calibration import (
    TASK_PRIOR_ROWS,
    Calibrator,
    TaskCalibrator,
    fit_calibrator,
)

#: The signal a calibrated cascade learns itself: a (query, answer) scorer per rung.
LEARNED = "learned-scorer"


class CalibratedCascade(ThresholdCascade):
    name = "calibrated-cascade"
    requires_fit = True
    learned_signals = (LEARNED,)

    def __init__(self, ladder: Sequence[str], threshold: Finite | Sequence[Finite] = 0.8,
                 method: str = "isotonic", signal: str = "mean_logprob",
                 embedder: str = "minilm", task_prior_rows: NonNegative | None = TASK_PRIOR_ROWS
                 ) -> None:
        """``signal``: the statistic the table's confidence column records (`triage
        collect` records the mean token logprob), fed live to the same calibrators; or
        "learned-scorer": a (query, answer) scorer per rung, fitted on the table's recorded
        answers with ``embedder``'s features and saved with the cascade, which scores each
        answer it judges itself, recorded or live. ``task_prior_rows``: each task of the
        calibration split gets its own calibration, weighed against the pooled one as if
        the pool were this many rows (see :class:`TaskCalibrator`); None: one calibration
        for every task."""
        super().__init__(ladder, threshold, signal)
        self.method = method
        self.embedder = embedder
        self.task_prior_rows = task_prior_rows
        if not np.all((np.asarray(threshold) >= 0.0) & (np.asarray(threshold) <= 1.01)):
            raise ValueError("its threshold is a probability of being right, between 0 and "
                             f"1, not {threshold}")

    @property
    def reads_answers(self) -> bool:  # type: ignore[override]
        return self.signal == LEARNED

    def live_signal(self):  # noqa: ANN201 - a live signal (see signals.live)
        return self.scorer_ if self.signal == LEARNED else super().live_signal()

    def fit(self, table: OutcomeTable) -> CalibratedCascade:
        if self.signal == LEARNED:
            from llmtriage.signals.embedder import embedder_named
            from llmtriage.signals.scorer import (
                AnswerScorer,
                FittedScorer,
                out_of_fold_scores,
                scoring_cost,
            )

            features = embedder_named(self.embedder)
            scores = out_of_fold_scores(table, list(self.ladder), features)
            raw = {m: scores[:, k] for k, m in enumerate(self.ladder)}
            self.scorer_ = FittedScorer.fit(table, list(self.ladder), features)
            sample = np.random.default_rng(0).choice(
                table.n_prompts, min(34, table.n_prompts), replace=False)
            self.scoring_cost_ = scoring_cost(
                AnswerScorer(features), table.prompts[sample],
                table.responses[sample, table.model_index(self.ladder[0])])
        else:
            super().fit(table)
            raw = {m: table.confidence[:, table.model_index(m)] for m in self.ladder}
        right = {m: table.quality[:, table.model_index(m)] >= 0.5 for m in self.ladder}
        self.calibrators_: dict[str, Calibrator | TaskCalibrator] = {
            m: fit_calibrator(raw[m], right[m], table.tasks, self.method, self.task_prior_rows)
            for m in self.ladder
        }
        return self

    def own_cost(self, model: str) -> tuple[float, float, float] | None:
        """Scoring an answer with the learned scorer: its CPU time, price and energy per
        answer as measured when fitted (an artifact saved before these were measured
        charges nothing)."""
        if self.signal != LEARNED or model not in self.ladder:
            return None
        return getattr(self, "scoring_cost_", None)

    def grid(self, table: OutcomeTable) -> list[float]:
        return np.linspace(0.0, 1.0, 21).tolist() + [1.01]

    def raw_confidence(self, state: State) -> np.ndarray:
        """Each query's latest answer's raw score: as recorded (or as the live signal gave
        it), or from the cascade's own scorer on the answer's text."""
        if self.signal != LEARNED:
            return state.last("confidence")
        if state.steps.width == 0:  # nothing answered yet
            return np.full(len(state.n_steps), np.nan)
        if state.answers is None:
            raise ValueError("a learned-scorer cascade judges answer texts; this backend "
                             "returned none (a replayed table needs its responses)")
        last = state.last_model()
        latest = [a[-1] if a else "" for a in state.answers]
        answers = np.array(latest, dtype=object)
        out = np.full(len(last), np.nan)
        for name in self.ladder:
            if name in state.models:
                sel = np.flatnonzero(last == state.models.index(name))
                out[sel] = self.scorer_.scores(name, state.queries.prompts[sel], answers[sel])
        return out

    def confidence(self, state: State) -> np.ndarray:
        raw = self.raw_confidence(state)
        last = state.last_model()
        out = np.full(len(raw), np.nan)
        for name, calibrate in self.calibrators_.items():
            if name in state.models:
                sel = last == state.models.index(name)
                out[sel] = calibrate(raw[sel], state.queries.tasks[sel])
        return out
