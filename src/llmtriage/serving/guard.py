"""What stands before a request runs: who the client is, whether it may, whether there is room.

- :class:`KeyRing`: clients' API keys (stored as SHA-256). Their limits (a rate over a
  sliding minute, requests in flight, a budget in USD with reservations) are kept by the
  shared state (:mod:`llmtriage.serving.state`), so replicas enforce them together.
- :class:`Admission`: at most ``max_in_flight`` requests run, at most ``max_queue`` wait;
  beyond that, a 429 with a Retry-After estimated from recent latencies, at once, instead of
  an unbounded queue that times everyone out.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import deque

from llmtriage.serving.config import ClientKey


class Refused(Exception):
    """A request the gateway will not run; carries its HTTP answer."""

    def __init__(self, status: int, message: str, kind: str, code: str,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.retry_after = status, kind, code, retry_after


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The clients' keys (their limits are the shared state's business)."""

    def __init__(self, keys: list[ClientKey]) -> None:
        self.keys = {k.sha256: k for k in keys}

    @property
    def open(self) -> bool:
        """No keys configured: anyone may call (bind to loopback only)."""
        return not self.keys

    def identify(self, authorization: str | None) -> ClientKey | None:
        if self.open:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "missing API key: send 'Authorization: Bearer <key>'",
                          "invalid_request_error", "missing_api_key")
        # Looked up by its digest: what a lookup's timing could reveal is a prefix of the
        # SHA-256 of a guess, never of a stored key's text, so no constant-time scan over
        # every key (which cost 0.7 ms a request with 10,000 keys) is needed.
        key = self.keys.get(key_hash(token.strip()))
        if key is None:
            raise Refused(401, "invalid API key", "invalid_request_error", "invalid_api_key")
        return key


class Allowance:
    """At most ``limit`` events in any ``period_s``: how often something anyone can cause
    (a log row, a log line) may happen.

    A sliding window over the last ``limit`` events taken, not fixed windows: a fixed
    window lets a flood that straddles its boundary through twice over."""

    def __init__(self, limit: int, period_s: float = 60.0) -> None:
        self.limit, self.period_s = limit, period_s
        self._taken: deque[float] = deque(maxlen=limit)

    def take(self) -> bool:
        now = time.monotonic()
        if self.limit <= 0 or (len(self._taken) == self.limit
                               and now - self._taken[0] < self.period_s):
            return False
        self._taken.append(now)
        return True


class Admission:
    def __init__(self, max_in_flight: int, max_queue: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(max_in_flight)
        self._latencies: deque[float] = deque(maxlen=100)

    def retry_after(self) -> float:
        """Roughly when a slot frees up: the queue's length in mean request times."""
        mean = sum(self._latencies) / len(self._latencies) if self._latencies else 1.0
        return max(1.0, math.ceil(mean * (self.waiting + 1) / self.max_in_flight))

    def slot(self) -> Slot:
        """One request's place among those running; entering it raises Refused when the
        queue before the gateway is full."""
        return Slot(self)


class Slot:
    """A class, not a generator context manager: it is entered on every request."""

    __slots__ = ("admission", "started")

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.started = 0.0

    async def __aenter__(self) -> None:
        gate = self.admission
        if gate.waiting >= gate.max_queue and gate._slots.locked():
            raise Refused(429, f"the gateway is at capacity ({gate.running} running, "
                               f"{gate.waiting} waiting); retry later",
                          "rate_limit_error", "overloaded", retry_after=gate.retry_after())
        gate.waiting += 1
        try:
            await gate._slots.acquire()
        finally:
            gate.waiting -= 1
        gate.running += 1
        self.started = time.perf_counter()

    async def __aexit__(self, *_: object) -> None:
        gate = self.admission
        gate._latencies.append(time.perf_counter() - self.started)
        gate.running -= 1
        gate._slots.release()
