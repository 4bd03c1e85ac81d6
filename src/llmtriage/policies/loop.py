"""The step loop shared by offline replay and live serving.

:class:`Episode` holds the state of a batch and asks the policy what to do; whoever drives
it (the synchronous replay below, or an async live driver) performs the calls it asks for
and records the results. Keeping the driver thin is what makes the benchmarked policy and
the served one the same code.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from llmtriage.backends.base import Queries, StepResult
from llmtriage.policies.base import LAST, STOP, Policy, State, Trace


class PolicyError(RuntimeError):
    """A policy made a decision the loop cannot carry out."""


class Backend(Protocol):
    models: tuple[str, ...]

    def call(self, model: int, queries: Queries, idx: np.ndarray) -> StepResult: ...


class Episode:
    def __init__(
        self,
        policy: Policy,
        models: tuple[str, ...],
        queries: Queries,
        max_steps: int | None = None,
    ) -> None:
        self.policy = policy
        self.state = State.start(models, queries)
        self.accepted = np.full(len(queries), LAST, dtype=np.int64)
        self.max_steps = max_steps or 2 * len(models) + 2

    def pending(self) -> list[tuple[int, np.ndarray]]:
        """Ask the policy; close the queries it stops; return the calls to make, per model."""
        state = self.state
        if not state.open.any():
            return []
        decision = self.policy.step(state)
        stopping = state.open & (decision.call == STOP)
        if stopping.any():
            if (state.n_steps[stopping] == 0).any():
                raise PolicyError(f"{self.policy.label} stopped a query before calling any model")
            accept = np.where(decision.accept == LAST, state.n_steps - 1, decision.accept)
            bad = stopping & ((accept < 0) | (accept >= state.n_steps))
            if bad.any():
                raise PolicyError(f"{self.policy.label} accepted a step that was never taken")
            self.accepted[stopping] = accept[stopping]
            state.open &= ~stopping
        calling = state.open
        if not calling.any():
            return []
        if (state.n_steps[calling] >= self.max_steps).any():
            raise PolicyError(f"{self.policy.label} did not stop within {self.max_steps} steps")
        targets = decision.call
        n_models = len(state.models)
        if ((targets[calling] < 0) | (targets[calling] >= n_models)).any():
            raise PolicyError(f"{self.policy.label} asked for a model index out of range")
        counts = np.bincount(targets[calling], minlength=n_models)
        if counts.max() == calling.sum():
            return [(int(counts.argmax()), np.flatnonzero(calling))]
        return [
            (int(m), np.flatnonzero(calling & (targets == m)))
            for m in np.flatnonzero(counts)
        ]

    def record(self, model: int, idx: np.ndarray, result: StepResult) -> None:
        self.state.record(model, idx, result)

    def trace(self) -> Trace:
        s = self.state
        return Trace(
            models=s.models,
            queries=s.queries,
            called=s.called,
            n_steps=s.n_steps,
            accepted_step=self.accepted,
            steps=s.steps,
            answers=s.answers,
        )


def run_policy(policy: Policy, backend: Backend, queries: Queries) -> Trace:
    """Run a policy to completion over a batch, calling the backend synchronously."""
    episode = Episode(policy, backend.models, queries)
    while groups := episode.pending():
        for model, idx in groups:
            episode.record(model, idx, backend.call(model, queries, idx))
    return episode.trace()
