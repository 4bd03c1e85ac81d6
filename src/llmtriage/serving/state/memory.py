"""The shared state of one gateway process, in memory (the default: no server to run).

Spend and the rate window survive a restart: both are re-read from the request log.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

from llmtriage.serving.config import ClientKey
from llmtriage.serving.sessions import SessionTable
from llmtriage.serving.state.base import (
    Pending,
    SharedState,
    Ticket,
    over_budget,
    over_rate,
    reservation_refused,
    too_many_in_flight,
)

#: How many responses' latest scores are remembered (feedback is deduplicated over them).
SCORES = 100_000
#: How many recent responses of learning policies await feedback (each keeps what its
#: policy's ``remember`` returned: a few numbers).
RECENT = 10_000


class MemoryState(SharedState):
    def __init__(self, keys: list[ClientKey], session_ttl_s: float = 3600.0,
                 spent: dict[str, float] | None = None,
                 recent: dict[str, list[float]] | None = None,
                 clock=time.monotonic) -> None:  # noqa: ANN001
        """``spent``, ``recent``: per key, its spend and the wall-clock times of its
        requests in the last minute, from the request log."""
        self.spent = dict(spent or {})
        self.reserved: dict[str, float] = {}
        self.in_flight: dict[str, int] = {}
        self.clock = clock
        self.sessions = SessionTable(session_ttl_s)
        self._recent: dict[str, deque[float]] = {k.name: deque() for k in keys}
        offset = clock() - time.time()
        for name, stamps in (recent or {}).items():
            if name in self._recent:
                self._recent[name].extend(sorted(t + offset for t in stamps))
        self._scores: OrderedDict[str, float] = OrderedDict()
        self._pending: OrderedDict[str, Pending] = OrderedDict()

    def _rate(self, key: ClientKey | None) -> None:
        if key is None or key.requests_per_minute is None:
            return
        now, recent = self.clock(), self._recent.setdefault(key.name, deque())
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        if len(recent) >= key.requests_per_minute:
            raise over_rate(key, recent[0] + 60.0 - now)
        recent.append(now)

    async def rate(self, key: ClientKey | None) -> None:
        self._rate(key)

    async def admit(self, key: ClientKey | None, most_usd: float) -> Ticket:
        if key is None:
            return Ticket(None)
        name = key.name
        if key.budget_usd is not None:
            spent, held = self.spent.get(name, 0.0), self.reserved.get(name, 0.0)
            if spent >= key.budget_usd:
                raise over_budget(key)
            if spent + held + most_usd > key.budget_usd:
                raise reservation_refused(key, most_usd, key.budget_usd - spent - held,
                                          held > 0)
        if key.max_in_flight is not None and self.in_flight.get(name, 0) >= key.max_in_flight:
            raise too_many_in_flight(key)
        self._rate(key)
        self.reserved[name] = self.reserved.get(name, 0.0) + most_usd
        self.in_flight[name] = self.in_flight.get(name, 0) + 1
        return Ticket(key, most_usd)

    async def settle(self, ticket: Ticket, usd: float) -> None:
        if ticket.settled or ticket.key is None:
            ticket.settled = True
            return
        ticket.settled = True
        name = ticket.key.name
        self.reserved[name] = max(0.0, self.reserved.get(name, 0.0) - ticket.reserved)
        self.in_flight[name] = max(0, self.in_flight.get(name, 0) - 1)
        self.spent[name] = self.spent.get(name, 0.0) + usd

    async def session(self, digest: bytes) -> str | None:
        return self.sessions.get(digest)

    async def stick(self, digest: bytes, model: str) -> None:
        self.sessions.put(digest, model)

    async def rescore(self, ident: str, score: float) -> float | None:
        previous = self._scores.pop(ident, None)
        self._scores[ident] = score
        while len(self._scores) > SCORES:
            self._scores.popitem(last=False)
        return previous

    async def await_feedback(self, ident: str, pending: Pending) -> None:
        self._pending[ident] = pending
        while len(self._pending) > RECENT:
            self._pending.popitem(last=False)

    async def pending(self, ident: str) -> Pending | None:
        return self._pending.get(ident)
