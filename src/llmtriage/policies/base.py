"""The one contract every decision-maker follows, offline and online.

A policy looks at a batch of queries and the steps each has taken so far (which models were
called, what they cost, how confident they were) and decides, per query, either which model
to call next or to stop and accept one of the answers it has. A router decides once, a
cascade after every answer, cascade routing at every step from any model. The policy is
written over arrays, so replaying a million recorded outcomes and serving one live request
run the very same code.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from llmtriage.backends.base import STEP_FIELDS, Queries, StepResult
from llmtriage.data.table import OutcomeTable

#: Decision code: call nothing more, accept an answer.
STOP = -1
#: Accept code: the answer of the last step taken.
LAST = -1

@dataclass
class State:
    """Steps taken so far by each query of a batch: ``(B, S)`` arrays, padded with -1 / NaN."""

    models: tuple[str, ...]
    queries: Queries
    called: np.ndarray
    n_steps: np.ndarray
    open: np.ndarray
    steps: dict[str, np.ndarray]
    answers: list[list[str]] | None = None

    @classmethod
    def start(cls, models: tuple[str, ...], queries: Queries) -> State:
        b = len(queries)
        return cls(
            models=models,
            queries=queries,
            called=np.full((b, 0), STOP, dtype=np.int64),
            n_steps=np.zeros(b, dtype=np.int64),
            open=np.ones(b, dtype=bool),
            steps={f: np.empty((b, 0)) for f in STEP_FIELDS},
            answers=None,
        )

    @property
    def width(self) -> int:
        return self.called.shape[1]

    def _grow(self) -> None:
        b = len(self.n_steps)
        self.called = np.hstack([self.called, np.full((b, 1), STOP, dtype=np.int64)])
        for f, values in self.steps.items():
            self.steps[f] = np.hstack([values, np.full((b, 1), np.nan)])

    def record(self, model: int, idx: np.ndarray, result: StepResult) -> None:
        k = self.n_steps[idx]
        if len(k) and k.max() >= self.width:
            self._grow()
        self.called[idx, k] = model
        for f in STEP_FIELDS:
            self.steps[f][idx, k] = getattr(result, f)
        if result.answers is not None:
            if self.answers is None:
                self.answers = [[] for _ in range(len(self.n_steps))]
            for i, text in zip(idx.tolist(), result.answers, strict=True):
                self.answers[i].append(text)
        self.n_steps[idx] += 1

    def last(self, field_name: str) -> np.ndarray:
        """The given measurement of each query's latest step (NaN before any step)."""
        if self.width == 0:
            return np.full(len(self.n_steps), np.nan)
        k = np.maximum(self.n_steps - 1, 0)
        values = self.steps[field_name][np.arange(len(k)), k]
        return np.where(self.n_steps > 0, values, np.nan)

    def last_model(self) -> np.ndarray:
        if self.width == 0:
            return np.full(len(self.n_steps), STOP, dtype=np.int64)
        k = np.maximum(self.n_steps - 1, 0)
        return np.where(self.n_steps > 0, self.called[np.arange(len(k)), k], STOP)

    def has_called(self, model: int) -> np.ndarray:
        return (self.called == model).any(axis=1)


@dataclass(frozen=True)
class Decision:
    """Per query: ``call`` a model index or STOP; when stopping, ``accept`` a step (LAST)."""

    call: np.ndarray
    accept: np.ndarray

    @classmethod
    def calls(cls, models: np.ndarray) -> Decision:
        models = np.asarray(models, dtype=np.int64)
        return cls(models, np.full(len(models), LAST, dtype=np.int64))


class Policy(ABC):
    """Anything that decides which model answers. Parameters live in ``__init__`` (as in
    scikit-learn), learned state in attributes with a trailing underscore, set by ``fit``."""

    #: Short family name used in reports ("cascade", "random", ...).
    name: str = "policy"
    #: Name of the trade-off attribute swept to trace a cost-quality curve, if any.
    tradeoff: str | None = None
    #: True only for upper bounds that must see the gold outcomes of the evaluated prompts.
    reads_gold: bool = False

    def fit(self, table: OutcomeTable) -> Self:
        """Learn from the training split. Baselines with nothing to learn return self."""
        return self

    @abstractmethod
    def step(self, state: State) -> Decision:
        """Decide, for every query of the batch, the next call or the answer to accept."""

    # -- parameters ---------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def with_params(self, **params: Any) -> Self:
        """A copy with some parameters changed (learned state is shared, not refitted)."""
        clone = copy.copy(self)
        for key, value in params.items():
            if key not in clone.params():
                raise TypeError(f"{type(self).__name__} has no parameter {key!r}")
            setattr(clone, key, value)
        return clone

    def grid(self, table: OutcomeTable) -> list[float]:
        """Values of the trade-off parameter that span this policy's curve on a table."""
        return []

    @property
    def label(self) -> str:
        if self.tradeoff is None:
            return self.name
        return f"{self.name}[{self.tradeoff}={_fmt(getattr(self, self.tradeoff))}]"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def resolve(models: tuple[str, ...], wanted: str | list[str] | tuple[str, ...]) -> np.ndarray:
    """Indices of model names in a backend's model list, with a clear error if absent."""
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    missing = [m for m in names if m not in models]
    if missing:
        raise ValueError(f"policy names model(s) {missing} not among {list(models)}")
    return np.array([models.index(m) for m in names], dtype=np.int64)


@dataclass(frozen=True)
class Trace:
    """Everything a batch of queries did: the evaluator's and the gateway's only input."""

    models: tuple[str, ...]
    queries: Queries
    called: np.ndarray
    n_steps: np.ndarray
    accepted_step: np.ndarray
    steps: dict[str, np.ndarray] = field(repr=False)
    answers: list[list[str]] | None = None

    @property
    def accepted_model(self) -> np.ndarray:
        return self.called[np.arange(len(self.n_steps)), self.accepted_step]

    def total(self, field_name: str) -> np.ndarray:
        """Per-query sum of a measurement over the steps taken (calls are sequential)."""
        values = self.steps[field_name]
        return np.where(self.called >= 0, values, 0.0).sum(axis=1)

    def known(self, field_name: str) -> bool:
        values = self.steps[field_name]
        return bool(np.isfinite(values[self.called >= 0]).all()) and values.size > 0
