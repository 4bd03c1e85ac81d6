"""What every replica of the gateway must agree on, behind one interface.

A key's budget (with the reservations of its running requests), its rate window and its
requests in flight; which model a sticky session is bound to; the score each response was
last given. One process keeps them in memory (:mod:`.memory`, the default); replicas share
them through Redis (:mod:`.redis`), where every update that must be exact across replicas
(a budget, a rate limit) is one atomic script, never read-modify-write from Python.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from llmtriage.serving.config import ClientKey
from llmtriage.serving.guard import Refused


@dataclass
class Ticket:
    """An admitted request's hold on its key: its reservation and its in-flight slot,
    released once by :meth:`SharedState.settle`."""

    key: ClientKey | None
    reserved: float = 0.0
    settled: bool = False


@dataclass
class Pending:
    """A learning policy's response awaiting feedback: what learning from it needs."""

    policy: str
    #: What the policy's ``remember`` returned for the prompt (a float vector).
    context: np.ndarray
    model: str
    client: str | None


@dataclass
class Lesson:
    """One learning update a replica made, for the others to make too."""

    context: np.ndarray
    model: str
    reward: float
    previous: float | None


def over_budget(key: ClientKey) -> Refused:
    return Refused(429, f"key {key.name!r} has spent its budget of ${key.budget_usd:g}",
                   "insufficient_quota", "budget_exceeded")


def reservation_refused(key: ClientKey, most_usd: float, left: float, held: bool) -> Refused:
    return Refused(429, f"key {key.name!r}: this request may cost up to ${most_usd:.3g} (its "
                        "prompt and max_tokens at the prices of the models it may call), more "
                        f"than the ${left:.3g} its budget has left beside its running "
                        "requests; lower max_tokens or wait for them", "insufficient_quota",
                   "budget_exceeded", retry_after=1.0 if held else None)


def too_many_in_flight(key: ClientKey) -> Refused:
    return Refused(429, f"key {key.name!r} has {key.max_in_flight} requests running, its "
                        "limit", "rate_limit_error", "concurrency_exceeded", retry_after=1.0)


def over_rate(key: ClientKey, wait: float) -> Refused:
    return Refused(429, f"key {key.name!r} is over its rate limit of "
                        f"{key.requests_per_minute:g} requests per minute", "rate_limit_error",
                   "rate_limit_exceeded", retry_after=wait)


class SharedState(ABC):
    """Keys' limits, sticky sessions and feedback scores, as the replicas see them."""

    @abstractmethod
    async def admit(self, key: ClientKey | None, most_usd: float) -> Ticket:
        """Refuse (raise Refused) a key over its budget, counting what its running
        requests may still spend and what this one may, its concurrency or its rate;
        otherwise hold a reservation of ``most_usd`` and a slot until settled."""

    @abstractmethod
    async def settle(self, ticket: Ticket, usd: float) -> None:
        """Release the ticket's reservation and slot and charge what was spent (once)."""

    @abstractmethod
    async def rate(self, key: ClientKey | None) -> None:
        """Count one request (feedback, say) against the key's rate limit, or refuse it."""

    @abstractmethod
    async def session(self, digest: bytes) -> str | None:
        """The model a session is bound to, if it is (refreshing its expiry)."""

    @abstractmethod
    async def stick(self, digest: bytes, model: str) -> None:
        """Bind a session to a model for the session TTL."""

    @abstractmethod
    async def rescore(self, ident: str, score: float) -> float | None:
        """Record a response's latest score; the one it replaces (None: the first)."""

    @abstractmethod
    async def await_feedback(self, ident: str, pending: Pending) -> None:
        """Keep what learning from this response needs, until its feedback (bounded)."""

    @abstractmethod
    async def pending(self, ident: str) -> Pending | None:
        """What :meth:`await_feedback` kept for a response, wherever it was answered."""

    async def teach(self, policy: str, lesson: Lesson) -> None:  # noqa: B027
        """Pass a learning update made here to the other replicas (none in one process)."""

    async def lessons(self, policy: str) -> list[Lesson]:
        """The learning updates other replicas made since the last call."""
        return []

    async def circuits(self, open_here: dict[str, float]) -> dict[str, float]:
        """Share the circuits open here (model -> seconds left) and return those open on
        any replica; in one process there is nothing to share."""
        return {}

    async def aclose(self) -> None:  # noqa: B027 - most stores hold no connection
        """Release connections."""
