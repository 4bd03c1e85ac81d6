"""Deterministic train/test assignment for sources that ship no split.

A prompt's split depends only on its id and the seed (a hash), so the same prompt lands in
the same split whatever else the table holds, and a table that grows keeps its old splits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from llmtriage.data.table import TEST, TRAIN, OutcomeTable

#: How a table's notes say how its splits came to be (see :func:`split_notes`).
SPLIT_NOTE = "split: "


def split_notes(notes: Sequence[str]) -> list[str]:
    """What a table's notes say of its splits (assigned by hash, repeated prompts moved),
    without the prefix: the file ``convert`` writes and the report show them."""
    return [n.removeprefix(SPLIT_NOTE) for n in notes if n.startswith(SPLIT_NOTE)]


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


def kfold(n: int, folds: int, seed: int = 0, groups: np.ndarray | None = None
          ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(kept, held) row indices of each of ``folds`` folds of a seeded permutation of ``n``
    rows: every row is held out exactly once, and fitted on in the other folds. A row with
    the ``groups`` code of an earlier row in the permutation (one prompt text asked twice)
    joins that row's fold, or a fold would score a router on a prompt it was fitted on;
    rows of distinct codes fall as they would without ``groups``."""
    order = np.random.default_rng(seed).permutation(n)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    if groups is not None:
        position = pd.Series(position).groupby(np.asarray(groups)).transform("min").to_numpy()
    fold = position[order] % folds
    for f in range(folds):
        held = order[fold == f]
        yield np.setdiff1d(order, held), held


def same_text(prompts: np.ndarray) -> np.ndarray:
    """A code per prompt, shared by prompts of one text (surrounding spaces aside); a
    prompt with no text has a code of its own."""
    text = pd.Series(prompts, dtype=object).fillna("").astype(str).str.strip()
    codes, _ = pd.factorize(text.where(text != "", None), use_na_sentinel=True)
    blank = codes < 0
    codes[blank] = codes.max(initial=-1) + 1 + np.arange(int(blank.sum()))
    return codes


def decontaminate(table: OutcomeTable) -> OutcomeTable:
    """Count as train every test prompt whose text is also a train prompt's: a router
    scored on it is scored on what it was fitted on. Published splits do repeat themselves
    (119 of LLMRouter's 500 test questions are train questions word for word), and ids
    hashed apart can hold one text."""
    codes = same_text(table.prompts)
    test = table.splits == TEST
    seen = np.isin(codes, codes[table.splits == TRAIN])
    leaked = test & seen
    if not leaked.any():
        return table
    splits = table.splits.copy()
    splits[leaked] = TRAIN
    return table.with_splits(splits).with_notes(
        f"{SPLIT_NOTE}{int(leaked.sum())} of {int(test.sum())} test prompts repeat a train "
        "prompt's text word for word: counted as train, so no router is scored on a "
        "prompt it was fitted on")


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
        f"{SPLIT_NOTE}{int(missing.sum())} prompts assigned by hash "
        f"(test fraction {test_fraction}, seed {seed})"
    )
