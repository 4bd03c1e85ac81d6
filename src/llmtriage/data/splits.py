"""Deterministic train/test assignment for sources that ship no split.

A prompt's split depends only on its id and the seed (a hash), so the same prompt lands in
the same split whatever else the table holds, and a table that grows keeps its old splits.
"""

from __future__ import annotations

import hashlib

import numpy as np

from llmtriage.data.table import TEST, TRAIN, OutcomeTable


def unit_hash(keys: np.ndarray, seed: int = 0) -> np.ndarray:
    """A uniform number in [0, 1) per key, stable across runs and machines."""
    out = np.empty(len(keys), dtype=np.float64)
    salt = f"{seed}:".encode()
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(salt + str(key).encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") / 2**64
    return out


def assign_missing_splits(
    table: OutcomeTable, test_fraction: float = 0.3, seed: int = 0
) -> OutcomeTable:
    """Fill prompts with no split; prompts that already have one keep it."""
    missing = (table.splits == "") | (table.splits == None)  # noqa: E711 (object array)
    if not missing.any():
        return table
    u = unit_hash(table.prompt_ids[missing], seed)
    splits = table.splits.copy()
    splits[missing] = np.where(u < test_fraction, TEST, TRAIN)
    return table.with_splits(splits).with_notes(
        f"split: {int(missing.sum())} prompts assigned by hash "
        f"(test fraction {test_fraction}, seed {seed})"
    )
