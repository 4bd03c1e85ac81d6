"""The step loop shared by offline replay and live serving.

:class:`Episode` holds the state of a batch and asks the policy what to do; whoever drives
it (the synchronous replay below, or an async live driver) performs the calls it asks for
and records the results. Keeping the driver thin is what makes the benchmarked policy and
the served one the same code.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Protocol

import numpy as np

from llmtriage.backends.base import LiveOptions, Queries, StepResult, gather_all
from llmtriage.policies.base import LAST, STOP, Policy, State, Trace, count_models


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
        targets = decision.call
        stopping = state.open & (targets == STOP)
        if stopping.any():
            taken = state.n_steps[stopping]
            if (taken == 0).any():
                raise PolicyError(f"{self.policy.label} stopped a query before calling any model")
            if decision.accept is None:
                self.accepted[stopping] = taken - 1
            else:
                accept = decision.accept[stopping]
                accept = np.where(accept == LAST, taken - 1, accept)
                if ((accept < 0) | (accept >= taken)).any():
                    raise PolicyError(f"{self.policy.label} accepted a step never taken")
                self.accepted[stopping] = accept
            state.open &= ~stopping
        calling = state.open
        n_calling = int(np.count_nonzero(calling))
        if n_calling == 0:
            return []
        if state.n_steps.max() >= self.max_steps and (
            state.n_steps[calling] >= self.max_steps
        ).any():
            raise PolicyError(f"{self.policy.label} did not stop within {self.max_steps} steps")
        wanted = targets if n_calling == len(targets) else targets[calling]
        n_models = len(state.models)
        if wanted.min() < 0 or wanted.max() >= n_models:
            raise PolicyError(f"{self.policy.label} asked for a model index out of range")
        counts = count_models(wanted, n_models)
        if counts.max() == n_calling:
            return [(int(counts.argmax()), np.flatnonzero(calling))]
        return [
            (int(m), np.flatnonzero(calling & (targets == m)))
            for m in np.flatnonzero(counts)
        ]

    def record(self, model: int, idx: np.ndarray, result: StepResult) -> None:
        self.state.record(model, idx, result)

    def trace(self) -> Trace:
        s = self.state
        return Trace(s.models, s.queries, s.n_steps, self.accepted, s.steps, s.answers,
                     s.completions, s.signal_calls)


class AsyncBackend(Protocol):
    models: tuple[str, ...]

    async def acall(self, model: int, queries: Queries, idx: np.ndarray,
                    options: LiveOptions | None = None) -> StepResult: ...


async def arun_policy(policy: Policy, backend: AsyncBackend, queries: Queries,
                      options: LiveOptions | None = None) -> Trace:
    """Run a policy over live models: the groups of one step are called concurrently. The
    answers are scored by the signal the policy holds, so it sees live the statistic it
    was fitted on."""
    options = options or LiveOptions()
    if options.signal is None and (signal := policy.live_signal()) is not None:
        options = replace(options, signal=signal)
    # Only the first answer streams.
    later = options if options.sink is None else replace(options, sink=None)
    episode = Episode(policy, backend.models, queries)

    async def pending() -> list[tuple[int, np.ndarray]]:
        if options.decide_in_thread:
            return await asyncio.to_thread(episode.pending)
        return episode.pending()

    while groups := await pending():
        first = episode.state.n_steps
        calls = [backend.acall(m, queries, idx,
                               options if options.sink is not None and (first[idx] == 0).all()
                               else later)
                 for m, idx in groups]
        results = await gather_all(calls)
        for (model, idx), result in zip(groups, results, strict=True):
            episode.record(model, idx, result)
    return episode.trace()


def run_policy(policy: Policy, backend: Backend, queries: Queries) -> Trace:
    """Run a policy to completion over a batch, calling the backend synchronously."""
    episode = Episode(policy, backend.models, queries)
    while groups := episode.pending():
        for model, idx in groups:
            episode.record(model, idx, backend.call(model, queries, idx))
    return episode.trace()
