"""A learned scorer of (query, answer) pairs, as in FrugalGPT.

Per model, a logistic regression on the query's and the answer's embeddings (and their
product, which lets it see whether the answer fits the question) plus cheap text features of
the answer, trained on recorded outcomes that include the responses. Its output is a raw
confidence like any other: calibrate it per model before thresholding.

Scoring is not free: each answer is embedded on the CPU. :func:`with_learned_confidence`
measures that time on answers never embedded before and adds it to the scored models' latency,
its price (the core-seconds at :data:`CPU_USD_PER_CORE_HOUR`) to their cost and its energy to
theirs, so a cascade that reads the scorer pays for it in every report, as a pool with a live
signal does. A learned-scorer cascade measures the same when fitted and charges it to every
answer it judges (``Policy.own_cost``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from llmtriage.backends.catalog import WATTS_PER_CORE
from llmtriage.backends.live import ChatRequest, Completion
from llmtriage.data.table import TRAIN, OutcomeTable
from llmtriage.signals.embedder import Embedder, MiniLMEmbedder, default_embedder, text_features
from llmtriage.signals.live import Signal

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

#: The price of one CPU core-hour used to charge local signals: AWS c7i on-demand, us-east-1,
#: $0.08925 an hour for 2 vCPUs (2024 list price).
CPU_USD_PER_CORE_HOUR = 0.08925 / 2


class AnswerScorer:
    def __init__(self, embedder: Embedder | None = None, c: float = 0.1) -> None:
        self.embedder = embedder or default_embedder()
        self.c = c

    def features(self, prompts: np.ndarray, answers: np.ndarray) -> np.ndarray:
        q = self.embedder.embed(list(prompts))
        a = self.embedder.embed(list(answers))
        return np.hstack([q, a, q * a, text_features(answers)])

    def fit_model(self, prompts: np.ndarray, answers: np.ndarray, correct: np.ndarray
                  ) -> LogisticRegression | float:
        if len(np.unique(correct)) < 2:
            return float(correct.mean())
        from sklearn.linear_model import LogisticRegression  # to fit only (see calibration)

        return LogisticRegression(C=self.c, max_iter=3000).fit(
            self.features(prompts, answers), correct)

    def score(self, fitted: LogisticRegression | float, prompts: np.ndarray,
              answers: np.ndarray) -> np.ndarray:
        if isinstance(fitted, float):
            return np.full(len(prompts), fitted)
        return fitted.predict_proba(self.features(prompts, answers))[:, 1]


@dataclass
class FittedScorer:
    """A learned (query, answer) scorer per model, as plain arrays: the state a policy keeps
    and saves, and applies to each answer it judges, recorded or live alike (the same
    features, the same weights: the same number for the same answer)."""

    models: tuple[str, ...]
    #: (models, features) logistic weights and (models,) biases; a model whose training
    #: answers were all right (or all wrong) has zero weights and its rate as the bias.
    weights: np.ndarray
    bias: np.ndarray
    embedder: Embedder

    @classmethod
    def fit(cls, table: OutcomeTable, models: list[str], embedder: Embedder,
            c: float = 0.1) -> FittedScorer:
        if table.responses is None:
            raise ValueError(f"table {table.name!r} has no responses to learn a scorer from")
        scorer = AnswerScorer(embedder, c)
        weights, bias = [], []
        for name in models:
            j = table.model_index(name)
            correct = (table.quality[:, j] >= 0.5).astype(int)
            fitted = scorer.fit_model(table.prompts, table.responses[:, j], correct)
            if isinstance(fitted, float):
                d = scorer.features(table.prompts[:1], table.responses[:1, j]).shape[1]
                p = min(max(fitted, 1e-3), 1 - 1e-3)
                weights.append(np.zeros(d))
                bias.append(float(np.log(p / (1 - p))))
            else:
                weights.append(fitted.coef_[0].astype(np.float64))
                bias.append(float(fitted.intercept_[0]))
        return cls(tuple(models), np.stack(weights), np.array(bias), embedder)

    name = "learned-scorer"

    async def __call__(self, pool: object, model: str, request: ChatRequest,
                       answer: Completion) -> Signal:
        """The live face: the score of a fresh answer to the request's last user turn."""
        prompt = next((m["content"] for m in reversed(request.messages)
                       if m["role"] == "user"), "")
        if model not in self.models:
            return Signal(float("nan"), [])
        value = self.scores(model, np.array([prompt], dtype=object),
                            np.array([answer.text], dtype=object))
        return Signal(float(value[0]), [])

    def scores(self, model: str, prompts: np.ndarray, answers: np.ndarray) -> np.ndarray:
        """P(right) of each answer of ``model`` to its prompt, as the scorer sees it."""
        if len(prompts) == 0:
            return np.empty(0)
        j = self.models.index(model)
        x = AnswerScorer(self.embedder).features(prompts, answers)
        return 1.0 / (1.0 + np.exp(-(x @ self.weights[j] + self.bias[j])))


def out_of_fold_scores(table: OutcomeTable, models: list[str], embedder: Embedder,
                       folds: int = 5, c: float = 0.1, seed: int = 0) -> np.ndarray:
    """(prompts, models) scores of each answer by a scorer fitted without its fold: what a
    calibrator must be fitted on (a scorer grading its own training answers looks sure)."""
    out = np.full((table.n_prompts, len(models)), np.nan)
    fold = np.random.default_rng(seed).permutation(table.n_prompts) % folds
    for f in range(folds):
        held = np.flatnonzero(fold == f)
        fitted = FittedScorer.fit(table.take(np.flatnonzero(fold != f)), models, embedder, c)
        for k, name in enumerate(models):
            out[held, k] = fitted.scores(name, table.prompts[held],
                                         table.responses[held, table.model_index(name)])
    return out


def scoring_cost(scorer: AnswerScorer, prompts: np.ndarray, answers: np.ndarray
                 ) -> tuple[float, float, float]:
    """(milliseconds, USD, joules) to score one answer with ``scorer``'s embedder, measured
    on the given sample, priced by core-seconds and powered at :data:`WATTS_PER_CORE`. A
    MiniLM embedder is timed as a fresh copy, since its cache already holds these texts and
    would make scoring look free."""
    embedder = scorer.embedder
    if isinstance(embedder, MiniLMEmbedder):
        embedder = MiniLMEmbedder(embedder.max_tokens, embedder.batch_size, embedder.threads)
    timed = AnswerScorer(embedder)
    timed.features(prompts[:2], answers[:2])  # load the model outside the timing
    start = time.perf_counter()
    timed.features(prompts[2:], answers[2:])
    seconds = (time.perf_counter() - start) / max(len(prompts) - 2, 1)
    cores = getattr(embedder, "threads", 1)
    return (seconds * 1000, seconds * cores * CPU_USD_PER_CORE_HOUR / 3600,
            seconds * cores * WATTS_PER_CORE)


def with_learned_confidence(table: OutcomeTable, models: list[str], folds: int = 5,
                            scorer: AnswerScorer | None = None, seed: int = 0,
                            charge: bool = True) -> OutcomeTable:
    """The table with a learned confidence for ``models``: training prompts get out-of-fold
    scores (a scorer never grades answers it was trained on), the others a scorer fitted on
    all training prompts. With ``charge``, the scored models' cost and latency (where
    recorded) include the measured cost of scoring. Needs the table's responses."""
    if table.responses is None:
        raise ValueError(f"table {table.name!r} has no responses to score")
    scorer = scorer or AnswerScorer()
    confidence = np.full(table.quality.shape, np.nan, order="F")
    train = np.flatnonzero(table.splits == TRAIN)
    rest = np.flatnonzero(table.splits != TRAIN)
    fold = np.random.default_rng(seed).permutation(len(train)) % folds
    for name in models:
        j = table.model_index(name)
        prompts, answers = table.prompts, table.responses[:, j]
        correct = (table.quality[:, j] >= 0.5).astype(int)
        for f in range(folds):
            fit_rows, held = train[fold != f], train[fold == f]
            fitted = scorer.fit_model(prompts[fit_rows], answers[fit_rows], correct[fit_rows])
            confidence[held, j] = scorer.score(fitted, prompts[held], answers[held])
        fitted = scorer.fit_model(prompts[train], answers[train], correct[train])
        if len(rest):
            confidence[rest, j] = scorer.score(fitted, prompts[rest], answers[rest])
    if hasattr(scorer.embedder, "save_cache"):
        scorer.embedder.save_cache()
    scored = replace(table, confidence=confidence).with_notes(
        f"confidence: learned (query, answer) scorer for {models}, out-of-fold on train")
    if not charge:
        return scored
    cols = [table.model_index(m) for m in models]
    sample = np.random.default_rng(seed).choice(table.n_prompts, min(66, table.n_prompts),
                                                replace=False)
    ms, usd, joules = scoring_cost(scorer, table.prompts[sample],
                                   table.responses[sample, cols[0]])
    cost, latency = table.cost_usd.copy(order="F"), table.latency_ms.copy(order="F")
    energy = table.energy_j.copy(order="F")
    cost[:, cols] += usd
    latency[:, cols] += ms
    energy[:, cols] += joules
    return replace(scored, cost_usd=cost, latency_ms=latency, energy_j=energy).with_notes(
        f"scoring charged to {models}: {ms:.1f} ms, ${usd:.2e} and {joules:.2f} J an "
        "answer (measured)")
