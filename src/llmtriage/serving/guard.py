"""What stands before a request runs: who the client is, whether it may, whether there is room.

- :class:`KeyRing`: clients' API keys (stored as SHA-256), a per-key rate limit over a
  sliding minute, a per-key cap on requests in flight, and a per-key budget in USD. A
  request's cost is known only when it ends, so admission reserves its most (every model
  the policy may call, at the request's prompt size and ``max_tokens``) and the
  :class:`Ticket` settles it with what was spent: concurrent requests cannot overshoot a
  budget together. Spend and the rate window survive restarts: both are re-read from the
  request log.
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
from dataclasses import dataclass

from llmtriage.serving.config import ClientKey


class Refused(Exception):
    """A request the gateway will not run; carries its HTTP answer."""

    def __init__(self, status: int, message: str, kind: str, code: str,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.retry_after = status, kind, code, retry_after


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Ticket:
    """An admitted request's hold on its key: its reservation and its in-flight slot,
    released once by :meth:`KeyRing.settle`."""

    key: ClientKey | None
    reserved: float = 0.0
    settled: bool = False


class KeyRing:
    def __init__(self, keys: list[ClientKey], spent: dict[str, float] | None = None,
                 recent: dict[str, list[float]] | None = None,
                 clock=time.monotonic) -> None:  # noqa: ANN001
        """``recent``: per key, the wall-clock times of its requests in the last minute
        (from the request log), so a restart does not reset the rate window."""
        self.keys = {k.sha256: k for k in keys}
        self.spent = dict(spent or {})
        self.reserved: dict[str, float] = {}
        self.in_flight: dict[str, int] = {}
        self.clock = clock
        self._recent: dict[str, deque[float]] = {k.name: deque() for k in keys}
        offset = clock() - time.time()
        for name, stamps in (recent or {}).items():
            if name in self._recent:
                self._recent[name].extend(sorted(t + offset for t in stamps))

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

    def rate(self, key: ClientKey | None) -> None:
        """Count one request against the key's rate limit, or refuse it."""
        if key is None or key.requests_per_minute is None:
            return
        now, recent = self.clock(), self._recent[key.name]
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        if len(recent) >= key.requests_per_minute:
            wait = recent[0] + 60.0 - now
            raise Refused(429, f"key {key.name!r} is over its rate limit of "
                               f"{key.requests_per_minute:g} requests per minute",
                          "rate_limit_error", "rate_limit_exceeded", retry_after=wait)
        recent.append(now)

    def admit(self, key: ClientKey | None, most_usd: float = 0.0) -> Ticket:
        """Refuse a key over its budget (counting what its running requests may still
        spend and what this one may), its concurrency or its rate; otherwise hold a
        reservation of ``most_usd`` and a slot until the ticket is settled."""
        if key is None:
            return Ticket(None)
        name = key.name
        if key.budget_usd is not None:
            spent, held = self.spent.get(name, 0.0), self.reserved.get(name, 0.0)
            if spent >= key.budget_usd:
                raise Refused(429, f"key {name!r} has spent its budget of "
                                   f"${key.budget_usd:g}", "insufficient_quota",
                              "budget_exceeded")
            if spent + held + most_usd > key.budget_usd:
                left = key.budget_usd - spent - held
                raise Refused(429, f"key {name!r}: this request may cost up to "
                                   f"${most_usd:.3g} (its prompt and max_tokens at the prices "
                                   f"of the models it may call), more than the ${left:.3g} "
                                   "its budget has left beside its running requests; lower "
                                   "max_tokens or wait for them", "insufficient_quota",
                              "budget_exceeded", retry_after=None if not held else 1.0)
        if key.max_in_flight is not None and self.in_flight.get(name, 0) >= key.max_in_flight:
            raise Refused(429, f"key {name!r} has {key.max_in_flight} requests running, its "
                               "limit", "rate_limit_error", "concurrency_exceeded",
                          retry_after=1.0)
        self.rate(key)
        self.reserved[name] = self.reserved.get(name, 0.0) + most_usd
        self.in_flight[name] = self.in_flight.get(name, 0) + 1
        return Ticket(key, most_usd)

    def settle(self, ticket: Ticket, usd: float) -> None:
        """Release the ticket's reservation and slot and charge what was spent."""
        if ticket.settled or ticket.key is None:
            ticket.settled = True
            return
        ticket.settled = True
        name = ticket.key.name
        self.reserved[name] = max(0.0, self.reserved.get(name, 0.0) - ticket.reserved)
        self.in_flight[name] = max(0, self.in_flight.get(name, 0) - 1)
        self.spent[name] = self.spent.get(name, 0.0) + usd


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
