"""Deterministic train/test assignment for sources that ship no split.

A prompt's split depends only on its id and the seed (a hash), so the same prompt lands in
the same split whatever else the table holds, and a table that grows keeps its old splits.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from llmtriage.data.table import TEST, TRAIN, OutcomeTable


def unit_hash(keys: np.ndarray, seed: int = 0, purpose: str = "split") -> np.ndarray:
    """A uniform number in [0, 1) per key, stable across runs, machines and table order.

    ``purpose`` keeps independent uses apart: without it, a random router seeded like the
    split would send exactly the test prompts one way.
    """
    hash_key = f"{purpose[:6]:<6}{seed:010d}"[:16]
    hashed = pd.util.hash_array(np.asarray(keys, dtype=object).astype(str), hash_key=hash_key)
    return (hashed >> np.uint64(11)).astype(np.float64) / float(2**53)


def hash_splits(prompt_ids: np.ndarray, test_fraction: float = 0.3, seed: int = 0
                ) -> np.ndarray:
    """'test' or 'train' per prompt id, by hash: the same id always gets the same split."""
    u = unit_hash(np.asarray(prompt_ids, dtype=object), seed, purpose="split")
    return np.where(u < test_fraction, TEST, TRAIN).astype(object)


def kfold(n: int, folds: int, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(kept, held) row indices of each of ``folds`` folds of a seeded permutation of ``n``
    rows: every row is held out exactly once, and fitted on in the other folds."""
    order = np.random.default_rng(seed).permutation(n)
    for f in range(folds):
        held = order[f::folds]
        yield np.setdiff1d(order, held), held


def assign_missing_splits(
    table: OutcomeTable, test_fraction: float = 0.3, seed: int = 0
) -> OutcomeTable:
    """Fill prompts with no split; prompts that already have one keep it."""
    missing = (table.splits == "") | (table.splits == None)  # noqa: E711 (object array)
    if not missing.any():
        return table
    splits = table.splits.copy()
    splits[missing] = hash_splits(table.prompt_ids[missing], test_fraction, seed)
    return table.with_splits(splits).with_notes(
        f"split: {int(missing.sum())} prompts assigned by hash "
        f"(test fraction {test_fraction}, seed {seed})"
    )
