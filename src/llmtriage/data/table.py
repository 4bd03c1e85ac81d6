"""The outcome table: N prompts answered by M models, held as columns.

Every public data format is turned into this one structure, and every policy is evaluated
against it. Per-outcome arrays are ``(N, M)`` and stored in Fortran (column-major) order, so
that "model m's outcomes for these prompts" -- the gather a replayed call does -- reads one
contiguous column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from llmtriage.data.errors import DataError, repeated

#: Names of the optional per-outcome columns, in the order the long format writes them.
OUTCOME_COLUMNS = ("cost_usd", "tokens_in", "tokens_out", "latency_ms", "energy_j", "confidence")

TRAIN, TEST = "train", "test"


def _known_columns(outcomes: dict[str, object]) -> None:
    unknown = set(outcomes) - set(OUTCOME_COLUMNS)
    if unknown:
        raise TypeError(f"unknown outcome columns: {sorted(unknown)}")


def _outcome_array(values: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if values is None:
        return np.full(shape, np.nan, order="F")
    return np.asfortranarray(values, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class OutcomeTable:
    """Recorded outcomes of ``len(models)`` models on ``len(prompt_ids)`` prompts.

    ``quality`` is in [0, 1] for every prompt and model. Optional measurements are NaN where
    the source did not record them (a whole column of NaN means "unknown", not zero).
    ``responses`` is an object array of answer texts, or None when the source has none.
    """

    models: tuple[str, ...]
    prompt_ids: np.ndarray
    prompts: np.ndarray
    tasks: np.ndarray
    splits: np.ndarray
    quality: np.ndarray
    cost_usd: np.ndarray
    tokens_in: np.ndarray
    tokens_out: np.ndarray
    latency_ms: np.ndarray
    energy_j: np.ndarray
    confidence: np.ndarray
    responses: np.ndarray | None = None
    name: str = "outcomes"
    #: Free-form provenance: source format, prices used, rows dropped and why.
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: The live signal the confidence column records (`triage collect` records
    #: "mean_logprob"), where the source says; a policy fitted on it must read the same.
    confidence_signal: str | None = None

    @classmethod
    def build(
        cls,
        models: Sequence[str],
        prompt_ids: Sequence[str],
        quality: np.ndarray,
        *,
        prompts: Sequence[str] | None = None,
        tasks: Sequence[str] | str = "",
        splits: Sequence[str] | str = "",
        responses: np.ndarray | None = None,
        name: str = "outcomes",
        notes: Sequence[str] = (),
        confidence_signal: str | None = None,
        **outcomes: np.ndarray | None,
    ) -> OutcomeTable:
        """Assemble a table from arrays, filling absent optional columns with NaN."""
        _known_columns(outcomes)
        n, m = len(prompt_ids), len(models)
        shape = (n, m)

        def per_prompt(values: Sequence[str] | str | None, default: str) -> np.ndarray:
            if values is None or isinstance(values, str):
                return np.full(n, values if isinstance(values, str) else default, dtype=object)
            return np.asarray(values, dtype=object)

        table = cls(
            models=tuple(str(x) for x in models),
            prompt_ids=np.asarray([str(p) for p in prompt_ids], dtype=object),
            prompts=per_prompt(prompts, ""),
            tasks=per_prompt(tasks, ""),
            splits=per_prompt(splits, ""),
            quality=_outcome_array(quality, shape),
            responses=None if responses is None else np.asarray(responses, dtype=object),
            name=name,
            notes=tuple(notes),
            confidence_signal=confidence_signal,
            **{c: _outcome_array(outcomes.get(c), shape) for c in OUTCOME_COLUMNS},
        )
        table.validate()
        return table

    # -- shape -------------------------------------------------------------------------

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_ids)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def __len__(self) -> int:
        return self.n_prompts

    def __repr__(self) -> str:
        return (
            f"OutcomeTable({self.name!r}, prompts={self.n_prompts}, models={self.n_models}, "
            f"tasks={sorted(set(self.tasks))})"
        )

    def model_index(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            raise DataError(
                f"model {model!r} is not in table {self.name!r}; it has: {', '.join(self.models)}"
            ) from None

    def has(self, column: str) -> bool:
        """Whether an optional column carries any recorded value."""
        return column in self.recorded

    @cached_property
    def has_text(self) -> bool:
        """Whether any prompt has its text (a router reads it; an outcome matrix may not)."""
        return any(str(p).strip() for p in self.prompts)

    @cached_property
    def recorded(self) -> frozenset[str]:
        """The optional columns that carry at least one recorded value."""
        return frozenset(c for c in OUTCOME_COLUMNS if np.isfinite(getattr(self, c)).any())

    # -- checks ------------------------------------------------------------------------

    def validate(self) -> None:
        """Refuse tables that would silently give wrong metrics."""
        n, m = self.n_prompts, self.n_models
        if m == 0 or n == 0:
            raise DataError(f"table {self.name!r} is empty ({n} prompts, {m} models)")
        if len(set(self.models)) != m:
            dup = repeated(self.models)
            raise DataError(f"table {self.name!r} names a model twice: {dup}")
        if len(set(self.prompt_ids)) != n:
            raise DataError(f"table {self.name!r} has duplicate prompt ids")
        for column in ("quality", *OUTCOME_COLUMNS):
            if getattr(self, column).shape != (n, m):
                raise DataError(f"column {column} has shape {getattr(self, column).shape}")
        q = self.quality
        bad = ~np.isfinite(q)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise DataError(
                f"table {self.name!r}: quality is missing (NaN) for {int(bad.sum())} outcomes, "
                f"first at prompt {self.prompt_ids[i]!r}, model {self.models[j]!r}"
            )
        out = (q < 0) | (q > 1)
        if out.any():
            i, j = np.argwhere(out)[0]
            raise DataError(
                f"table {self.name!r}: quality must lie in [0, 1]; found {float(q[i, j]):g} "
                f"at prompt {self.prompt_ids[i]!r}, model {self.models[j]!r}"
            )
        # NaN is "not recorded"; a negative or infinite resource is wrong (a confidence is
        # not a resource: it may be -inf, a log-probability of a token given no chance).
        for column in ("cost_usd", "tokens_in", "tokens_out", "latency_ms", "energy_j"):
            values = getattr(self, column)
            if (values < 0).any():
                raise DataError(f"table {self.name!r}: {column} has negative values")
            infinite = np.isinf(values)
            if infinite.any():
                i, j = np.argwhere(infinite)[0]
                raise DataError(f"table {self.name!r}: {column} is infinite at prompt "
                                f"{self.prompt_ids[i]!r}, model {self.models[j]!r}")

    # -- slicing -----------------------------------------------------------------------

    def take(self, rows: np.ndarray, name: str | None = None) -> OutcomeTable:
        """A table of the given prompt rows (an index array or a boolean mask)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        per_outcome = {
            c: np.asfortranarray(getattr(self, c)[rows]) for c in ("quality", *OUTCOME_COLUMNS)
        }
        return replace(
            self,
            prompt_ids=self.prompt_ids[rows],
            prompts=self.prompts[rows],
            tasks=self.tasks[rows],
            splits=self.splits[rows],
            responses=None if self.responses is None else self.responses[rows],
            name=name or self.name,
            **per_outcome,
        )

    def select_models(self, models: Sequence[str]) -> OutcomeTable:
        cols = [self.model_index(x) for x in models]
        per_outcome = {
            c: np.asfortranarray(getattr(self, c)[:, cols]) for c in ("quality", *OUTCOME_COLUMNS)
        }
        return replace(
            self,
            models=tuple(models),
            responses=None if self.responses is None else self.responses[:, cols],
            **per_outcome,
        )

    def with_model(self, name: str, quality: np.ndarray, responses: np.ndarray | None = None,
                   **outcomes: np.ndarray) -> OutcomeTable:
        """The table plus one model column (a derived one: a model with a paid-for signal)."""
        _known_columns(outcomes)
        n = self.n_prompts
        columns = {
            c: np.asfortranarray(np.column_stack([
                getattr(self, c), outcomes.get(c, np.full(n, np.nan))]))
            for c in OUTCOME_COLUMNS
        }
        if self.responses is not None:
            extra = np.full(n, "", dtype=object) if responses is None else responses
            columns["responses"] = np.column_stack([self.responses, extra])
        table = replace(self, models=(*self.models, name),
                        quality=np.asfortranarray(np.column_stack([self.quality, quality])),
                        **columns)
        table.validate()
        return table

    def split(self, which: str) -> OutcomeTable:
        """The rows of one split ('train' or 'test'); 'all' returns the table itself."""
        if which == "all":
            return self
        mask = self.splits == which
        if not mask.any():
            sizes = ", ".join(f"{k} {v}" for k, v in self.split_sizes().items())
            raise DataError(f"table {self.name!r} has no prompts in split {which!r} "
                            f"(it has {sizes})")
        return self.take(mask, name=f"{self.name}[{which}]")

    def filter_task(self, task: str) -> OutcomeTable:
        mask = self.tasks == task
        if not mask.any():
            raise DataError(
                f"table {self.name!r} has no task {task!r}; tasks: {sorted(set(self.tasks))}"
            )
        return self.take(mask, name=f"{self.name}:{task}")

    def with_notes(self, *notes: str) -> OutcomeTable:
        return replace(self, notes=self.notes + tuple(notes))

    def with_splits(self, splits: np.ndarray) -> OutcomeTable:
        return replace(self, splits=np.asarray(splits, dtype=object))

    def replicate(self, times: int) -> OutcomeTable:
        """The table repeated ``times`` times with fresh prompt ids (for scale benchmarks)."""
        rows = np.tile(np.arange(self.n_prompts), times)
        big = self.take(rows, name=f"{self.name}x{times}")
        copy = np.repeat(np.arange(times), self.n_prompts).astype(str)
        ids = np.char.add(np.char.add(self.prompt_ids[rows].astype(str), "#"), copy)
        return replace(big, prompt_ids=ids.astype(object))

    # -- summaries ---------------------------------------------------------------------

    def mean_quality(self) -> dict[str, float]:
        return dict(zip(self.models, self.quality.mean(axis=0).tolist(), strict=True))

    def mean_cost(self) -> dict[str, float]:
        return dict(zip(self.models, np.nanmean(self.cost_usd, axis=0).tolist(), strict=True))

    def split_sizes(self) -> dict[str, int]:
        values, counts = np.unique(self.splits.astype(str), return_counts=True)
        return {str(v) or "unassigned": int(c) for v, c in zip(values, counts, strict=True)}
