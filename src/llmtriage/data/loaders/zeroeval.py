"""ZeroEval (Lin et al.): per-task correctness matrices of dozens of models.

Files per task: ``<task>_questions.parquet`` (id, question, answer), ``<task>_correct_matrix``
(prompt x model, 0/1 with holes), ``<task>_output_chars`` (answer lengths) and, where
published, ``<task>_model_outputs`` (the answers' full text, long format). Cost is
derived from the question and answer lengths (four characters a token) and the price
catalog. Models that answered under 90% of the prompts are dropped (a failed provider run
is not a wrong answer), then prompts still missing an outcome; the notes say which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmtriage.data.errors import DataError
from llmtriage.data.loaders._wide import complete_cases
from llmtriage.data.prices import PriceCatalog, derive_costs, tokens_from_chars
from llmtriage.data.table import OutcomeTable

TASKS = ("gsm", "crux", "math-l5")


def available_tasks(root: Path) -> list[str]:
    return sorted(p.name.removesuffix("_correct_matrix.parquet")
                  for p in root.glob("*_correct_matrix.parquet"))


def _parquet(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"ZeroEval data: missing file {path}")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from None


def _responses(path: Path, ids: np.ndarray, models: list[str]) -> np.ndarray | None:
    """The (prompt, model) answer texts, "" where a kept outcome has no published text."""
    if not path.is_file():
        return None
    frame = _parquet(path)
    if not {"id", "model", "output"} <= set(frame.columns):
        raise DataError(f"{path}: needs columns id, model and output; has {list(frame.columns)}")
    wide = (frame.assign(id=frame["id"].astype(str))
            .drop_duplicates(["id", "model"], keep="last")
            .pivot(index="id", columns="model", values="output")
            .reindex(index=ids, columns=models))
    return wide.fillna("").to_numpy(dtype=object)


def load(
    path: str | Path,
    *,
    task: str = "gsm",
    missing: str = "drop",
    prices: PriceCatalog | None = None,
) -> OutcomeTable:
    """``missing="drop"`` (for routing) drops incomplete models, then prompts;
    ``missing="wrong"`` keeps everything and scores an absent answer 0, as the official
    ZeroEval summaries count it."""
    if missing not in ("drop", "wrong"):
        raise DataError(f"missing must be 'drop' or 'wrong', not {missing!r}")
    root = Path(path)
    if task not in available_tasks(root):
        raise DataError(f"{root}: no ZeroEval task {task!r}; found {available_tasks(root)}")
    questions = _parquet(root / f"{task}_questions.parquet")
    matrix = _parquet(root / f"{task}_correct_matrix.parquet").astype("float64")
    chars = _parquet(root / f"{task}_output_chars.parquet").astype("float64")
    ids = questions["id"].astype(str).to_numpy()
    matrix.index = matrix.index.astype(str)
    chars.index = chars.index.astype(str)
    if set(matrix.index) != set(ids):
        raise DataError(f"{root}: {task} matrix rows do not match the question ids")
    matrix, chars = matrix.reindex(ids), chars.reindex(ids)
    if missing == "drop":
        rows, models, notes = complete_cases(matrix)
    else:
        rows, models = np.ones(len(matrix), dtype=bool), [str(m) for m in matrix.columns]
        holes = int(matrix.isna().sum().sum())
        notes = [f"{holes} missing outcomes scored as wrong (0)"] if holes else []
        matrix, chars = matrix.fillna(0.0), chars.fillna(0.0)
    quality = matrix.loc[rows, models].to_numpy()
    out_chars = chars.loc[rows, models].to_numpy()
    if np.isnan(out_chars).any():
        raise DataError(f"{root}: {task} output lengths missing where correctness is recorded")
    prompts = questions["question"].astype(str).to_numpy()[rows]
    responses = _responses(root / f"{task}_model_outputs.parquet", ids[rows], models)
    tokens_in = np.repeat(tokens_from_chars(np.char.str_len(prompts.astype(str)))[:, None],
                          len(models), axis=1)
    tokens_out = tokens_from_chars(out_chars)
    cost, price_notes = derive_costs(
        tuple(models), tokens_in, tokens_out, PriceCatalog.default_with(prices)
    )
    return OutcomeTable.build(
        models,
        ids[rows],
        quality,
        prompts=prompts,
        tasks=task,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost,
        responses=responses,
        name=f"zeroeval-{task}",
        notes=[f"source: ZeroEval {root} task {task}", *notes, *price_notes],
    )
