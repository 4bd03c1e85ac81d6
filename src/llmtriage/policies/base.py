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
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from llmtriage.backends.base import STEP_FIELDS, Queries, StepResult
from llmtriage.data.table import OutcomeTable

if TYPE_CHECKING:
    from llmtriage.backends.live import Completion

#: Decision code: call nothing more, accept an answer.
STOP = -1
#: Accept code: the answer of the last step taken.
LAST = -1


def span(steps: np.ndarray) -> tuple[int, int]:
    """The least and greatest step index of a batch. A live batch holds one query or a
    few, where two numpy reductions cost more than reading the values out."""
    if steps.size <= 16:
        values = steps.tolist()
        return min(values), max(values)
    return int(steps.min()), int(steps.max())


class StepColumns:
    """Per-step arrays of a batch, one length-B column per step index.

    Columns rather than a (B, S) matrix: most batches move in lockstep (every open query at
    the same step), so a call writes one contiguous column, and a measurement no backend
    reported (latency in a cost-only table) is never allocated at all.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.called: list[np.ndarray] = []
        self.values: dict[str, list[np.ndarray | None]] = {f: [] for f in STEP_FIELDS}

    @property
    def width(self) -> int:
        return len(self.called)

    def _grow(self) -> None:
        self.called.append(np.full(self.size, STOP, dtype=np.int64))
        for columns in self.values.values():
            columns.append(None)

    def write(self, k: np.ndarray, idx: np.ndarray, model: int, result: StepResult) -> None:
        """Record a call to ``model`` (or, per query, the model that actually answered, when
        the backend reports it) for the queries ``idx`` at their step indices ``k``."""
        k_lo, k_hi = span(k)
        while self.width <= k_hi:
            self._grow()
        whole = k_lo == k_hi and len(idx) == self.size  # every query, in lockstep
        answered = result.models
        for step in range(k_lo, k_hi + 1):
            sel = slice(None) if k_lo == k_hi else (k == step)
            rows = slice(None) if whole else idx[sel]
            self.called[step][rows] = model if answered is None else answered[sel]
            for f in STEP_FIELDS:
                value = getattr(result, f)
                if value is None:
                    continue
                column = self.values[f][step]
                if column is None and whole:
                    # No other group writes this step: keep the backend's array (read-only
                    # views of a replayed table are shared, not copied).
                    self.values[f][step] = np.asarray(value, dtype=np.float64)
                    continue
                if column is None:
                    column = self.values[f][step] = np.full(self.size, np.nan)
                column[rows] = value[sel]

    def column(self, field_name: str, step: int) -> np.ndarray:
        column = self.values[field_name][step]
        return np.full(self.size, np.nan) if column is None else column

    def at(self, field_name: str, steps: np.ndarray) -> np.ndarray:
        """Each query's value of a measurement at its own step index (NaN where absent).

        Read-only: in lockstep (all at one step) it is the stored column itself."""
        lo, hi = span(steps)
        if lo == hi:
            column = self.values[field_name][lo] if 0 <= lo < self.width else None
            return np.full(self.size, np.nan) if column is None else column
        out = np.full(self.size, np.nan)
        for step in range(self.width):
            column = self.values[field_name][step]
            if column is not None:
                np.copyto(out, column, where=steps == step)
        return out

    def model_at(self, steps: np.ndarray) -> np.ndarray:
        lo, hi = span(steps)
        if lo == hi and 0 <= lo < self.width:
            return self.called[lo].copy()
        out = np.full(self.size, STOP, dtype=np.int64)
        for step in range(self.width):
            np.copyto(out, self.called[step], where=steps == step)
        return out

    def known(self, field_name: str) -> bool:
        """True when every step taken reported this measurement."""
        if not self.called:
            return False
        for called, column in zip(self.called, self.values[field_name], strict=True):
            taken = called >= 0
            if column is None:
                if taken.any():
                    return False
            elif not np.isfinite(column[taken]).all():
                return False
        return True

    def total(self, field_name: str) -> np.ndarray:
        """Per-query sum over the steps taken (calls are sequential: costs and times add)."""
        out = np.zeros(self.size)
        for column in self.values[field_name]:
            if column is not None:  # NaN exactly where the step was not taken (or unknown)
                np.add(out, column, out=out, where=~np.isnan(column))
        return out

    def matrix(self) -> np.ndarray:
        """The models called, as a (B, S) matrix padded with STOP."""
        if not self.called:
            return np.full((self.size, 0), STOP, dtype=np.int64)
        return np.stack(self.called, axis=1)


@dataclass
class State:
    """Steps taken so far by each query of a batch."""

    models: tuple[str, ...]
    queries: Queries
    steps: StepColumns
    n_steps: np.ndarray
    open: np.ndarray
    answers: list[list[str]] | None = None
    #: Live only: per query, each step's completion and its signal's extra calls.
    completions: list[list[Completion]] | None = None
    signal_calls: list[list[Completion]] | None = None

    @classmethod
    def start(cls, models: tuple[str, ...], queries: Queries) -> State:
        b = len(queries)
        return cls(models, queries, StepColumns(b), np.zeros(b, dtype=np.int64),
                   np.ones(b, dtype=bool))

    def record(self, model: int, idx: np.ndarray, result: StepResult) -> None:
        self.steps.write(self.n_steps[idx], idx, model, result)
        if result.answers is not None:
            if self.answers is None:
                self.answers = [[] for _ in range(len(self.n_steps))]
            for i, text in zip(idx.tolist(), result.answers, strict=True):
                self.answers[i].append(text)
        if result.completions is not None:
            if self.completions is None:
                self.completions = [[] for _ in range(len(self.n_steps))]
                self.signal_calls = [[] for _ in range(len(self.n_steps))]
            extra = result.signal_calls or [[] for _ in idx]
            for i, done, calls in zip(idx.tolist(), result.completions, extra, strict=True):
                self.completions[i].append(done)
                self.signal_calls[i].extend(calls)
        if len(idx) == len(self.n_steps):
            self.n_steps += 1
        else:
            self.n_steps[idx] += 1

    def last(self, field_name: str) -> np.ndarray:
        """The given measurement of each query's latest step (NaN before any step)."""
        return self.steps.at(field_name, self.n_steps - 1)

    def last_model(self) -> np.ndarray:
        return self.steps.model_at(self.n_steps - 1)


def count_models(indices: np.ndarray, n_models: int) -> np.ndarray:
    """How often each model index occurs (STOP, other negatives and indices past the last
    model ignored)."""
    if n_models <= 8:  # a few comparisons beat a bincount on long arrays
        return np.array([np.count_nonzero(indices == j) for j in range(n_models)])
    return np.bincount(indices[(indices >= 0) & (indices < n_models)], minlength=n_models)


@dataclass(frozen=True)
class Decision:
    """Per query: ``call`` a model index or STOP; when stopping, ``accept`` a step index
    (LAST for the latest). ``accept=None`` means LAST for every query."""

    call: np.ndarray
    accept: np.ndarray | None = None

    @classmethod
    def calls(cls, models: np.ndarray) -> Decision:
        return cls(np.asarray(models, dtype=np.int64))


class Policy(ABC):
    """Anything that decides which model answers. Parameters live in ``__init__`` (as in
    scikit-learn), learned state in attributes with a trailing underscore, set by ``fit``."""

    #: The registered kind (see ``policies.registry``): the ``-p`` name, the config ``kind``,
    #: the artifact's kind and the family in reports are this one word.
    name: str = "policy"
    #: Name of the trade-off attribute swept to trace a cost-quality curve, if any.
    tradeoff: str | None = None
    #: True only for upper bounds that must see the gold outcomes of the evaluated prompts.
    reads_gold: bool = False
    #: The confidence signal its decisions read, by name (see ``llmtriage.signals.live``):
    #: the table's recorded confidence offline, the same statistic of each answer live.
    #: None for policies that judge no answer (routers). Cascades take it as a parameter.
    signal: str | None = None

    #: Whether ``learn`` does anything: the gateway keeps recent prompts only for these.
    learns: bool = False
    #: Whether it must be fitted on outcomes before it can decide anything (a baseline's
    #: ``fit`` at most prepares a sweep).
    requires_fit: bool = False
    #: Whether it reads the answers' texts (a replay must then hand out recorded answers).
    reads_answers: bool = False
    #: Signals it learns itself when fitted (and saves), beside the named live ones.
    learned_signals: tuple[str, ...] = ()

    def fit(self, table: OutcomeTable) -> Self:
        """Learn from the training split. Baselines with nothing to learn return self."""
        return self

    def live_signal(self):  # noqa: ANN201 - a live signal (see signals.live), or None
        """What scores each live answer for this policy: the signal it names."""
        if self.signal is None:
            return None
        from llmtriage.signals.live import signal_named

        return signal_named(self.signal)

    def own_cost(self, model: str) -> tuple[float, float, float] | None:
        """(milliseconds, USD, joules) of the policy's own computing per answer of ``model``
        it judges (a learned scorer embedding the answer on the CPU): the loop adds it to
        the step that produced the answer, replayed and live alike, so every report and
        every bill pays for it. None: judging costs nothing beyond the call."""
        return None

    def remember(self, prompt: str) -> Any:
        """What :meth:`learn` will need of ``prompt``, computed when it is answered: a
        server keeps this (a few numbers, bounded) per response awaiting feedback, never
        the prompt's text. None for policies that do not learn online."""
        return None

    def learn(self, prompt: Any, model: str, reward: float,
              previous: float | None = None) -> bool:
        """One piece of live feedback: ``model`` answered ``prompt`` (its text, or what
        :meth:`remember` returned for it) with quality ``reward``. ``previous``: the score
        this same response taught before; the latest score replaces it instead of counting
        twice. True if it changed what the policy will do; most policies do not learn
        online."""
        return False

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
    def curve_name(self) -> str:
        """The name of this policy's whole curve in reports."""
        return self.name

    @property
    def label(self) -> str:
        if self.tradeoff is None:
            return self.curve_name
        return f"{self.curve_name}[{self.tradeoff}={_fmt(getattr(self, self.tradeoff))}]"


def check_signal(policy: Policy, table: OutcomeTable) -> None:
    """Refuse to fit a policy on confidences of another statistic than the one it reads
    live: it would be calibrated on one number and fed another."""
    recorded = table.confidence_signal
    if recorded is not None and policy.signal is not None and recorded != policy.signal:
        raise ValueError(f"{policy.name} reads the {policy.signal} signal, but {table.name}'s "
                         f"confidence records {recorded}; set signal={recorded!r}")


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
    n_steps: np.ndarray
    accepted_step: np.ndarray
    steps: StepColumns = field(repr=False)
    answers: list[list[str]] | None = None
    #: Live only: per query, each step's completion (text, tokens, logprobs, finish
    #: reason, the model that answered) and the calls its confidence signal made.
    completions: list[list[Completion]] | None = field(default=None, repr=False)
    signal_calls: list[list[Completion]] | None = field(default=None, repr=False)
    #: Queries served other than their policy asked (a request's limits, see
    #: policies.limits), by index, with the reason.
    degraded: dict[int, str] = field(default_factory=dict)

    @property
    def accepted_model(self) -> np.ndarray:
        return self.steps.model_at(self.accepted_step)

    def accepted_answer(self, query: int) -> str:
        """The text of the answer a query accepted ("" when no text was recorded)."""
        if not self.answers or not self.answers[query]:
            return ""
        return self.answers[query][int(self.accepted_step[query])]

    def accepted_completion(self, query: int) -> Completion | None:
        """The call whose answer a query accepted (None where no call was recorded)."""
        if not self.completions or not self.completions[query]:
            return None
        return self.completions[query][int(self.accepted_step[query])]

    @property
    def called(self) -> np.ndarray:
        return self.steps.matrix()

    def total(self, field_name: str) -> np.ndarray:
        return self.steps.total(field_name)

    def known(self, field_name: str) -> bool:
        return self.steps.known(field_name)

    def calls_per_model(self) -> np.ndarray:
        counts = np.zeros(len(self.models), dtype=np.int64)
        for called in self.steps.called:
            counts += count_models(called, len(self.models))
        return counts

    def called_model(self, model: int) -> np.ndarray:
        out = np.zeros(len(self.n_steps), dtype=bool)
        for called in self.steps.called:
            out |= called == model
        return out
