"""Choices a policy needs when the user names none, read off a table's training split."""

from __future__ import annotations

import numpy as np

from llmtriage.data.table import OutcomeTable


def reference_pair(table: OutcomeTable) -> tuple[str, str]:
    """(weak, strong): the cheapest model and the best one, by mean cost and quality."""
    quality = table.quality.mean(axis=0)
    cost = np.nanmean(table.cost_usd, axis=0) if table.has("cost_usd") else np.zeros(len(quality))
    strong = int(np.lexsort((cost, -quality))[0])
    weak = int(np.lexsort((-quality, cost))[0])
    return table.models[weak], table.models[strong]
