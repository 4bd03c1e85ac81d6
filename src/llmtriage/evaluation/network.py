"""What a policy's answers cost when the link to the cloud fails now and then.

A replayed trace assumes every call succeeds. On a device, a share of requests find the
cloud unreachable; the gateway then answers on the device and says so (``degraded``). The
same happens here, per query, from the trace alone (vectorised, no replay): a query whose
link is down keeps the steps it took before its first cloud call; its answer is the last
of those (a local-first cascade's device answer), or, when it had none, the device model's;
learning that the link is down costs ``detect_ms``. Queries whose link is up are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmtriage.data.table import OutcomeTable
from llmtriage.evaluation.evaluate import gold_quality
from llmtriage.policies.base import STOP, Trace


@dataclass(frozen=True)
class Outages:
    """Which requests find the cloud unreachable, and what finding out costs."""

    #: Share of requests during which the cloud cannot be reached.
    rate: float = 0.0
    #: Time lost learning it (a connect timeout); 0 when the device knows it is offline.
    detect_ms: float = 0.0
    seed: int = 0

    def down(self, n: int) -> np.ndarray:
        return np.random.default_rng(self.seed).random(n) < self.rate


@dataclass(frozen=True)
class Served:
    """Per query: what the user got and paid, and whether the device stood in."""

    quality: np.ndarray
    cost_usd: np.ndarray
    latency_ms: np.ndarray
    degraded: np.ndarray

    def summary(self) -> dict[str, float]:
        return {"quality": float(self.quality.mean()), "cost_usd": float(self.cost_usd.mean()),
                "latency_p50_ms": float(np.percentile(self.latency_ms, 50)),
                "latency_p95_ms": float(np.percentile(self.latency_ms, 95)),
                "degraded": float(self.degraded.mean())}


def served(trace: Trace, table: OutcomeTable, cloud: np.ndarray, device: int | None,
           outages: Outages | None = None) -> Served:
    """The trace's outcomes with outages applied. ``table`` is the one it replayed,
    ``cloud`` marks its cloud models, ``device`` is the model that answers when a query
    has no device answer of its own (None: a deployment with no device, where such a
    query fails, scoring 0)."""
    outages = outages or Outages()
    rows = trace.queries.rows if trace.queries.rows is not None else np.arange(len(table))
    n = len(rows)
    quality = gold_quality(table, rows, trace.accepted_model)
    cost = np.nan_to_num(trace.total("cost_usd"))
    latency = np.nan_to_num(trace.total("latency_ms"))
    down = outages.down(n)
    called = trace.called  # (n, steps), STOP past a query's last step
    on_cloud = (called != STOP) & cloud[np.where(called == STOP, 0, called)]
    hit = down & on_cloud.any(axis=1)
    if not hit.any():
        return Served(quality, cost, latency, np.zeros(n, dtype=bool))
    first = np.where(on_cloud.any(axis=1), on_cloud.argmax(axis=1), called.shape[1])
    before = np.arange(called.shape[1])[None, :] < first[:, None]

    def kept(field: str) -> np.ndarray:
        steps = np.column_stack([np.nan_to_num(trace.steps.column(field, s))
                                 for s in range(called.shape[1])])
        return (steps * before).sum(axis=1)

    had_local = first > 0
    last_local = called[np.arange(n), np.maximum(first - 1, 0)]
    fresh = hit & ~had_local  # the device model is called now, if there is one
    out_q, out_c, out_l = quality.copy(), cost.copy(), latency.copy()
    out_c[hit] = kept("cost_usd")[hit]
    out_l[hit] = kept("latency_ms")[hit] + outages.detect_ms
    answered = hit & had_local
    out_q[answered] = gold_quality(table, rows[answered], last_local[answered])
    if device is None:
        out_q[fresh] = 0.0
    else:
        out_q[fresh] = table.quality[rows[fresh], device]
        out_c[fresh] += np.nan_to_num(table.cost_usd[rows[fresh], device])
        out_l[fresh] += np.nan_to_num(table.latency_ms[rows[fresh], device])
    return Served(out_q, out_c, out_l, hit)
