"""What a call to each model takes now: recent latencies, and the queue ahead of a new call.

A request's deadline is kept against these estimates (policies.limits), so they must follow
the model as it is now (a loaded device, a slow link), not as it was benchmarked: an
exponentially weighted mean of recent calls' latencies and costs, and the calls in flight.
A new call on a model with ``slots`` concurrent calls and ``n`` in flight waits for about
``n // slots`` calls ahead of it before its own, so it is expected to take
``(n // slots + 1)`` times the mean. Before any call, and once no call has refreshed the
estimate for a minute, the catalog's prior holds.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

#: Weight of the newest call: about the last ten calls count.
ALPHA = 0.2


#: An estimate no call has refreshed for this long is dropped (the prior holds again), so
#: a model avoided because it was slow is tried again once it may have recovered.
STALE_S = 60.0


class LatencyTracker:
    def __init__(self, alpha: float = ALPHA, stale_s: float = STALE_S) -> None:
        self.alpha = alpha
        self.stale_s = stale_s
        self._seen: dict[str, float] = {}
        self._latency: dict[str, float] = {}
        self._cost: dict[str, float] = {}
        self.in_flight: Counter[str] = Counter()

    def observe(self, model: str, latency_ms: float, cost_usd: float | None = None,
                at_least: bool = False) -> None:
        """A finished call; ``at_least``: one cut short (failed, timed out, cancelled at a
        deadline) that would have taken at least this long, which a model's estimate
        never stays below: one hung call is enough to stop sending it deadlines it
        cannot meet."""
        if not math.isfinite(latency_ms) or latency_ms < 0:
            return
        mixed = self._mix(self._latency.get(model), latency_ms)
        self._latency[model] = max(mixed, latency_ms) if at_least else mixed
        self._seen[model] = time.monotonic()
        if cost_usd is not None and math.isfinite(cost_usd) and cost_usd >= 0:
            self._cost[model] = self._mix(self._cost.get(model), cost_usd)

    def _mix(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.alpha * (new - old)

    @contextmanager
    def calling(self, model: str) -> Iterator[None]:
        self.in_flight[model] += 1
        try:
            yield
        finally:
            self.in_flight[model] -= 1

    def expected_ms(self, model: str, slots: int, prior_ms: float | None = None) -> float:
        """A new call's expected latency, queue included (NaN: nothing known yet)."""
        fresh = time.monotonic() - self._seen.get(model, -math.inf) <= self.stale_s
        mean = self._latency[model] if fresh else prior_ms
        if mean is None:
            return math.nan
        return mean * (self.in_flight[model] // max(slots, 1) + 1)

    def mean_cost(self, model: str) -> float:
        return self._cost.get(model, 0.0)

    def snapshot(self) -> dict[str, dict[str, float | int]]:
        """Per model measured so far: mean latency and calls in flight (for /health)."""
        return {m: {"latency_ms": round(v, 1), "in_flight": self.in_flight[m]}
                for m, v in self._latency.items()}
