"""A circuit breaker per upstream model: stop calling a model that keeps failing.

Closed (normal) -> open after ``failures`` consecutive failed calls (a call has already been
retried by its backend when it counts as failed). While open, calls are refused at once, so
a dead upstream costs no timeouts; after ``reset_s`` the breaker is half-open and lets one
probe call through: success closes it, failure opens it for another ``reset_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half-open"]


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    trips: int = 0


class CircuitBreaker:
    def __init__(self, failures: int = 5, reset_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def _get(self, name: str) -> _Circuit:
        return self._circuits.setdefault(name, _Circuit())

    def state(self, name: str) -> State:
        c = self._get(name)
        if c.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - c.opened_at >= self.reset_s else "open"

    def retry_in(self, name: str) -> float:
        """Seconds until an open circuit lets a probe through (0 when it would now)."""
        c = self._get(name)
        if c.opened_at is None:
            return 0.0
        return max(0.0, self.reset_s - (self.clock() - c.opened_at))

    def allow(self, name: str) -> bool:
        """Whether a call may go to ``name`` now; in half-open, one probe at a time."""
        state = self.state(name)
        if state == "closed":
            return True
        c = self._get(name)
        if state == "half-open" and not c.probing:
            c.probing = True
            return True
        return False

    def success(self, name: str) -> None:
        c = self._get(name)
        c.failures, c.opened_at, c.probing = 0, None, False

    def failure(self, name: str) -> None:
        c = self._get(name)
        c.failures += 1
        if c.probing or (c.opened_at is None and c.failures >= self.failures):
            c.opened_at, c.probing = self.clock(), False
            c.trips += 1

    def hold_open(self, name: str, seconds: float) -> None:
        """Open ``name``'s circuit for ``seconds`` because another replica found it failing
        (not counted as a trip here); no effect on a circuit already open or probing."""
        c = self._get(name)
        if c.opened_at is None and seconds > 0:
            c.opened_at = self.clock() - self.reset_s + min(seconds, self.reset_s)

    def open_for(self) -> dict[str, float]:
        """The circuits open now and the seconds until each lets a probe through."""
        return {name: self.retry_in(name) for name in self._circuits
                if self.state(name) == "open"}

    def abandon(self, name: str) -> None:
        """A call given up by its caller (cancelled): no verdict on the upstream, but a
        half-open circuit's probe slot is free again."""
        self._get(name).probing = False

    def trips(self, name: str) -> int:
        return self._get(name).trips

    def snapshot(self) -> dict[str, State]:
        return {name: self.state(name) for name in self._circuits}
