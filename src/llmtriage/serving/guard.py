"""What stands before a request runs: who the client is, whether it may, whether there is room.

- :class:`KeyRing`: clients' API keys (stored as SHA-256), a per-key rate limit over a
  sliding minute, and a per-key budget in USD (spend survives restarts: it is re-read from
  the request log). A request's cost is known only when it ends, so a key may overspend by
  the requests it had in flight when it crossed its budget.
- :class:`Admission`: at most ``max_in_flight`` requests run, at most ``max_queue`` wait;
  beyond that, a 429 with a Retry-After estimated from recent latencies, at once, instead of
  an unbounded queue that times everyone out.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
    def __init__(self, keys: list[ClientKey], spent: dict[str, float] | None = None,
                 clock=time.monotonic) -> None:  # noqa: ANN001
        self.keys = {k.sha256: k for k in keys}
        self.spent = dict(spent or {})
        self.clock = clock
        self._recent: dict[str, deque[float]] = {k.name: deque() for k in keys}

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
        digest = key_hash(token.strip())
        for stored, key in self.keys.items():
            if hmac.compare_digest(stored, digest):
                return key
        raise Refused(401, "invalid API key", "invalid_request_error", "invalid_api_key")

    def admit(self, key: ClientKey | None) -> None:
        """Refuse a key over its budget or its rate; otherwise count this request."""
        if key is None:
            return
        if key.budget_usd is not None and self.spent.get(key.name, 0.0) >= key.budget_usd:
            raise Refused(429, f"key {key.name!r} has spent its budget of "
                               f"${key.budget_usd:g}", "insufficient_quota", "budget_exceeded")
        if key.requests_per_minute is not None:
            now, recent = self.clock(), self._recent[key.name]
            while recent and recent[0] <= now - 60.0:
                recent.popleft()
            if len(recent) >= key.requests_per_minute:
                wait = recent[0] + 60.0 - now
                raise Refused(429, f"key {key.name!r} is over its rate limit of "
                                   f"{key.requests_per_minute:g} requests per minute",
                              "rate_limit_error", "rate_limit_exceeded", retry_after=wait)
            recent.append(now)

    def charge(self, key: ClientKey | None, usd: float) -> None:
        if key is not None:
            self.spent[key.name] = self.spent.get(key.name, 0.0) + usd


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

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self.waiting >= self.max_queue:
            raise Refused(429, f"the gateway is at capacity ({self.running} running, "
                               f"{self.waiting} waiting); retry later",
                          "rate_limit_error", "overloaded", retry_after=self.retry_after())
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self._latencies.append(time.perf_counter() - started)
            self.running -= 1
            self._slots.release()
