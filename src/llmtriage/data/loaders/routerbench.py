"""RouterBench (Hu et al. 2024): its wide CSV and its published pickle.

One row per prompt; per model a 0/1 quality column ``<model>``, ``<model>|model_response`` and
``<model>|total_cost`` (real USD). A directory of ``<task>_train.csv`` / ``<task>_test.csv``
keeps those splits.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from llmtriage.data.errors import DataError
from llmtriage.data.loaders._wide import complete_cases
from llmtriage.data.table import OutcomeTable

_META = {"sample_id", "prompt", "eval_name", "oracle_model_to_route_to", "Unnamed: 0", ""}


def models_of(frame: pd.DataFrame) -> list[str]:
    costed = {c.split("|", 1)[0] for c in frame.columns if c.endswith("|total_cost")}
    return [c for c in frame.columns if c in costed and c not in _META]


def from_frame(
    frame: pd.DataFrame, name: str, split: str | np.ndarray = "", source: str = ""
) -> OutcomeTable:
    models = models_of(frame)
    missing = [c for c in ("sample_id", "prompt") if c not in frame.columns]
    if missing or not models:
        raise DataError(
            f"{source or name}: not RouterBench's wide format "
            f"(need sample_id, prompt, and <model> with <model>|total_cost columns)"
        )
    rows, models, notes = complete_cases(frame[models])
    frame = frame[rows]
    costs = frame[[f"{m}|total_cost" for m in models]].to_numpy(dtype=np.float64)
    responses = None
    response_cols = [f"{m}|model_response" for m in models]
    if all(c in frame.columns for c in response_cols):
        responses = frame[response_cols].fillna("").astype(str).to_numpy(dtype=object)
    tasks: str | np.ndarray = name
    if "eval_name" in frame:
        tasks, merged = _benchmark_tasks(frame["eval_name"].astype(str).to_numpy())
        notes += merged
    splits = split if isinstance(split, str) else np.asarray(split)[rows]
    return OutcomeTable.build(
        models,
        frame["sample_id"].astype(str).to_numpy(),
        frame[models].to_numpy(dtype=np.float64),
        prompts=frame["prompt"].astype(str).to_numpy(),
        tasks=tasks,
        splits=splits,
        cost_usd=costs,
        responses=responses,
        name=name,
        notes=[f"source: RouterBench {source}", *notes],
    )


def _benchmark_tasks(eval_names: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Each prompt's task as RouterBench reports it: its published pickle names each of
    MMLU's 57 subjects as an eval (``mmlu-anatomy``, ...), while its tables count MMLU as
    one of eight tasks. Counted as one task, leave-one-task-out holds out MMLU, not one
    subject of it beside 56 others, and a report runs a held-out search per benchmark,
    not over sixty."""
    subject = np.char.startswith(eval_names.astype(str), "mmlu-")
    if not subject.any():
        return eval_names, []
    subjects = len(set(eval_names[subject].tolist()))
    return (np.where(subject, "mmlu", eval_names).astype(object),
            [f"{subjects} MMLU subjects (mmlu-*) counted as one task, mmlu, as RouterBench "
             "reports it"])


def load(path: str | Path) -> OutcomeTable:
    """A RouterBench directory, one CSV, or a published ``.pkl``."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise DataError(f"{path}: no RouterBench CSV files")
        frames = []
        for f in files:
            frame = _read_csv(f)
            stem = f.stem
            frame["__split"] = "train" if stem.endswith("_train") else (
                "test" if stem.endswith("_test") else ""
            )
            frames.append(frame)
        frame = pd.concat(frames, ignore_index=True)
        return from_frame(frame, "routerbench", frame.pop("__split").to_numpy(), str(path))
    if path.suffix.lower() in (".pkl", ".pickle"):
        return from_frame(read_pickle_safely(path), path.stem, "", str(path))
    return from_frame(_read_csv(path), path.stem, "", str(path))


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read as CSV: {exc}") from None


# -- the published pickle -------------------------------------------------------------------

#: Modules whose classes and reconstructors a pickled DataFrame legitimately refers to.
_ALLOWED_PREFIXES = (
    "pandas.core.frame",
    "pandas.core.series",
    "pandas.core.indexes.",
    "pandas.core.internals.",
    "pandas.core.arrays.",
    "pandas.core.dtypes.",
    "pandas._libs.internals",
    "pandas._libs.arrays",
    "pandas.arrays",
)
_ALLOWED_GLOBALS = {
    *(("pandas", n) for n in ("DataFrame", "Series", "Index", "RangeIndex", "MultiIndex",
                              "Categorical", "CategoricalDtype", "StringDtype")),
    *(("numpy", n) for n in ("ndarray", "dtype")),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "scalar"),
    *(("pyarrow.lib", n) for n in ("_restore_array", "py_buffer", "type_for_alias")),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("builtins", "slice"),
    ("builtins", "bytearray"),
}


class _DataFrameOnlyUnpickler(pickle.Unpickler):
    """Unpickles a pandas DataFrame and refuses every other global (no code execution)."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle protocol)
        allowed = (module, name) in _ALLOWED_GLOBALS or module.startswith(_ALLOWED_PREFIXES)
        if not allowed:
            raise DataError(f"refusing pickle: it refers to {module}.{name}, not to DataFrame data")
        return super().find_class(module, name)


def read_pickle_safely(path: Path) -> pd.DataFrame:
    """Read RouterBench's published pickle without executing anything it could smuggle in."""
    try:
        data = path.read_bytes()
        frame = _DataFrameOnlyUnpickler(io.BytesIO(data)).load()
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, OSError) as exc:
        raise DataError(f"{path}: not a readable pandas pickle: {exc}") from None
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{path}: the pickle holds {type(frame).__name__}, not a DataFrame")
    return frame
