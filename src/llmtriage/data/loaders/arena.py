"""arena-hard-auto v0.1 history (LMSYS): 300 open-ended prompts, GPT-4 judge scores 1-10.

Quality is the judge score divided by 10. The answer-length table spells some models
without their org prefix ("Mixtral-8x7B-..." for "mistralai/Mixtral-8x7B-..."), so columns
are matched on the name after the last '/'.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmtriage.data.errors import DataError
from llmtriage.data.loaders._wide import complete_cases
from llmtriage.data.loaders.generic import numeric_column
from llmtriage.data.prices import PriceCatalog, derive_costs, tokens_from_chars
from llmtriage.data.table import OutcomeTable

_PREFIX = "arena_bench_v1"


def _csv(path: Path, *columns: str) -> pd.DataFrame:
    """One of the three files, indexed by question, with ``columns`` (the others: one per
    model, numbers)."""
    if not path.is_file():
        raise DataError(f"arena-bench data: missing file {path}")
    frame = pd.read_csv(path)
    missing = [c for c in ("question_id", *columns) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r}")
    frame = frame.set_index("question_id")
    if not columns:  # a model's scores or answer lengths: numbers, or empty where missing
        frame = pd.DataFrame({c: numeric_column(frame, c, path) for c in frame.columns},
                             index=frame.index)
    return frame


def load(path: str | Path, *, prices: PriceCatalog | None = None) -> OutcomeTable:
    root = Path(path)
    questions = _csv(root / f"{_PREFIX}_questions.csv", "prompt")
    scores = _csv(root / f"{_PREFIX}_judge_scores_300xM.csv")
    chars = _csv(root / f"{_PREFIX}_answer_chars_300xM.csv")
    short = {c.rsplit("/", 1)[-1]: c for c in chars.columns}
    unmatched = [m for m in scores.columns if m.rsplit("/", 1)[-1] not in short]
    if unmatched:
        raise DataError(f"{root}: no answer lengths for models {unmatched}")
    chars = chars[[short[m.rsplit("/", 1)[-1]] for m in scores.columns]]
    chars.columns = scores.columns
    chars = chars.reindex(scores.index)
    if ((scores < 1) | (scores > 10)).any().any():
        raise DataError(f"{root}: judge scores must lie in 1..10")
    rows, models, notes = complete_cases(scores)
    ids = scores.index.to_numpy()[rows]
    prompts = questions.reindex(ids)["prompt"].fillna("").astype(str).to_numpy()
    tokens_in = np.repeat(
        tokens_from_chars(np.array([len(p) for p in prompts]))[:, None], len(models), axis=1
    )
    tokens_out = tokens_from_chars(chars.loc[rows, models].to_numpy(dtype=float))
    cost, price_notes = derive_costs(
        tuple(models), tokens_in, tokens_out, PriceCatalog.default_with(prices)
    )
    return OutcomeTable.build(
        models,
        ids,
        scores.loc[rows, models].to_numpy(dtype=float) / 10.0,
        prompts=prompts,
        tasks="arena-hard",
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost,
        name="arena-bench",
        notes=[f"source: arena-bench {root}", "quality = judge score / 10", *notes, *price_notes],
    )
