"""Shared handling of "prompt x model" matrices with holes.

Public matrices have missing outcomes (a model that timed out, a provider that failed half a
run). A routing table needs every model's outcome on every prompt, so: models answering too
few prompts are dropped, then prompts still missing an outcome are dropped, and both are
recorded in the table's notes rather than silently scored as zero.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: A model must have answered this share of prompts to stay in the table.
MIN_MODEL_COVERAGE = 0.9


def complete_cases(
    quality: pd.DataFrame, min_coverage: float = MIN_MODEL_COVERAGE
) -> tuple[np.ndarray, list[str], list[str]]:
    """Rows and models to keep so that no quality is missing, and the notes saying why."""
    notes: list[str] = []
    coverage = quality.notna().mean(axis=0)
    weak = coverage[coverage < min_coverage]
    for model, share in weak.items():
        notes.append(f"dropped model {model}: outcomes for only {share:.0%} of prompts")
    models = [str(m) for m in quality.columns if m not in weak.index]
    rows = quality[models].notna().all(axis=1).to_numpy()
    if not rows.all():
        notes.append(f"dropped {int((~rows).sum())} prompts with a missing outcome")
    return rows, models, notes
