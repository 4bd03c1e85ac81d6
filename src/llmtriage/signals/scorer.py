"""A learned scorer of (query, answer) pairs, as in FrugalGPT.

Per model, a logistic regression on the query's and the answer's embeddings (and their
product, which lets it see whether the answer fits the question) plus cheap text features of
the answer, trained on recorded outcomes that include the responses. Its output is a raw
confidence like any other: calibrate it per model before thresholding.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from sklearn.linear_model import LogisticRegression

from llmtriage.data.table import TRAIN, OutcomeTable
from llmtriage.signals.embedder import Embedder, default_embedder, text_features


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
        return LogisticRegression(C=self.c, max_iter=3000).fit(
            self.features(prompts, answers), correct)

    def score(self, fitted: LogisticRegression | float, prompts: np.ndarray,
              answers: np.ndarray) -> np.ndarray:
        if isinstance(fitted, float):
            return np.full(len(prompts), fitted)
        return fitted.predict_proba(self.features(prompts, answers))[:, 1]


def with_learned_confidence(table: OutcomeTable, models: list[str], folds: int = 5,
                            scorer: AnswerScorer | None = None, seed: int = 0) -> OutcomeTable:
    """The table with a learned confidence for ``models``: training prompts get out-of-fold
    scores (a scorer never grades answers it was trained on), the others a scorer fitted on
    all training prompts. Needs the table's responses."""
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
    return replace(table, confidence=confidence).with_notes(
        f"confidence: learned (query, answer) scorer for {models}, out-of-fold on train")
