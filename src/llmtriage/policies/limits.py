"""A request's own limits, a deadline and a spend cap, kept by the step loop for every policy.

A policy says which model it wants next; the loop asks the backend what that call would
take (:class:`Estimator`: live, recent latencies with the queue ahead and the price of the
request's tokens; replayed, the table's means) and keeps to the limits:

- a call that fits is made, and the time left bounds it (the loop cancels it at the
  deadline);
- a call that does not fit is not made: a query that has an answer stops there and keeps
  it; one with no answer yet goes to the model that fits and would cost the most (the
  nearest stand-in for the model asked for: on an edge device, the device's largest model
  when the cloud is too slow or too dear);
- a query nothing can serve within its limits (or, for a request naming one model, that
  model cannot) raises :class:`LimitError` naming the limit, before anything is spent.

Each query answered other than its policy asked is marked degraded, with the reason
(``Trace.degraded``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from llmtriage.backends.base import Queries

#: The names a limit goes by everywhere: the body extension's fields, the config's keys;
#: the HTTP headers are ``x-triage-`` plus the name with dashes.
LATENCY, COST = "max_latency_ms", "max_cost_usd"


@dataclass(frozen=True)
class Limits:
    """What one request may take (None: no limit)."""

    max_latency_ms: float | None = None
    max_cost_usd: float | None = None

    def __bool__(self) -> bool:
        return self.max_latency_ms is not None or self.max_cost_usd is not None

    def over(self, default: Limits | None) -> Limits:
        """These limits, each filled from ``default`` where not given."""
        if default is None:
            return self
        return Limits(self.max_latency_ms if self.max_latency_ms is not None
                      else default.max_latency_ms,
                      self.max_cost_usd if self.max_cost_usd is not None
                      else default.max_cost_usd)


class LimitError(RuntimeError):
    """No model can serve a query within its limits (``limit``: LATENCY or COST)."""

    def __init__(self, limit: str, message: str, during_call: bool = False) -> None:
        super().__init__(message)
        self.limit = limit
        #: Whether the limit ran out during a call (the deadline), not before any.
        self.during_call = during_call


class Estimator(Protocol):
    def estimate(self, model: int, queries: Queries, idx: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Per query of ``idx``: the expected latency (ms, NaN: unknown, taken to fit) and
        the most it would cost (USD) to call ``model`` now."""
        ...


def _fits(latency: np.ndarray, cost: np.ndarray, time_left: np.ndarray | float,
          money_left: np.ndarray | float) -> np.ndarray:
    slow = np.isfinite(latency) & (latency > time_left)
    return ~slow & ~(cost > money_left)


def within(groups: list[tuple[int, np.ndarray]], n_steps: np.ndarray, spent: np.ndarray,
           elapsed_ms: np.ndarray, estimator: Estimator, queries: Queries,
           models: tuple[str, ...], limits: Limits, stand_ins: bool = True
           ) -> tuple[list[tuple[int, np.ndarray]], np.ndarray, dict[int, str]]:
    """The calls to make within ``limits`` (``spent`` and ``elapsed_ms``: per query, so
    far): the groups, the queries to stop at their last answer, and why each query that
    was served other than asked was. Without ``stand_ins`` (a request naming one model)
    a call that does not fit is refused, never moved to another model."""
    time_left = np.full(len(n_steps), np.inf) if limits.max_latency_ms is None \
        else limits.max_latency_ms - elapsed_ms
    money_left = np.full(len(n_steps), np.inf) if limits.max_cost_usd is None \
        else limits.max_cost_usd - spent
    kept: dict[int, list[int]] = {}
    stop: list[int] = []
    reasons: dict[int, str] = {}
    for model, idx in groups:
        latency, cost = estimator.estimate(model, queries, idx)
        ok = _fits(latency, cost, time_left[idx], money_left[idx])
        kept.setdefault(model, []).extend(idx[ok].tolist())
        for i, late, dear in zip(idx[~ok].tolist(), latency[~ok], cost[~ok], strict=True):
            slow = bool(np.isfinite(late) and late > time_left[i])
            why = (f"{models[model]} expected to take {late:,.0f} ms with "
                   f"{time_left[i]:,.0f} ms left" if slow else
                   f"{models[model]} may cost ${dear:.6f} with ${money_left[i]:.6f} left")
            if n_steps[i] > 0:
                stop.append(i)
                reasons[i] = f"stopped: {why}"
                continue
            stand_in = _stand_in(i, estimator, queries, len(models), time_left[i],
                                 money_left[i]) if stand_ins else None
            if stand_in is None:
                limit = LATENCY if slow else COST
                raise LimitError(limit, _nothing_fits(limit, limits, float(time_left[i])))
            kept.setdefault(stand_in, []).append(i)
            reasons[i] = f"answered by {models[stand_in]}: {why}"
    out = [(m, np.array(sorted(ix), dtype=np.int64)) for m, ix in kept.items() if ix]
    return out, np.array(sorted(stop), dtype=np.int64), reasons


def _stand_in(i: int, estimator: Estimator, queries: Queries, n_models: int,
              time_left: float, money_left: float) -> int | None:
    one = np.array([i])
    best, best_cost = None, -1.0
    for m in range(n_models):
        latency, cost = estimator.estimate(m, queries, one)
        if _fits(latency, cost, time_left, money_left)[0] and cost[0] > best_cost:
            best, best_cost = m, float(cost[0])
    return best


def _nothing_fits(limit: str, limits: Limits, time_left: float) -> str:
    if limit == LATENCY:
        return (f"no model can answer within {LATENCY} = {limits.max_latency_ms:g} "
                f"({time_left:,.0f} ms left; see each model's expected latency in /health)")
    return f"no model can answer within {COST} = {limits.max_cost_usd:g}"
