"""The step loop shared by offline replay and live serving.

:class:`Episode` holds the state of a batch and asks the policy what to do; whoever drives
it (the synchronous replay below, or an async live driver) performs the calls it asks for
and records the results. Keeping the driver thin is what makes the benchmarked policy and
the served one the same code.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Protocol

import numpy as np

from llmtriage.backends.base import LiveOptions, Queries, StepResult, charged, gather_all
from llmtriage.policies.base import LAST, STOP, Policy, State, Trace, count_models
from llmtriage.policies.limits import LATENCY, Estimator, LimitError, Limits, within


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
        self.degraded: dict[int, str] = {}

    def pending(self) -> list[tuple[int, np.ndarray]]:
        """Ask the policy; close the queries it stops; return the calls to make, per model.

        Counts (``np.count_nonzero``) rather than ``any``/``min``/``max``: on the gateway's
        batches of one, each numpy reduction's call costs more than its work."""
        state = self.state
        if not np.count_nonzero(state.open):
            return []
        decision = self.policy.step(state)
        targets = decision.call
        stopping = state.open & (targets == STOP)
        if np.count_nonzero(stopping):
            taken = state.n_steps[stopping]
            if np.count_nonzero(taken == 0):
                raise PolicyError(f"{self.policy.label} stopped a query before calling any model")
            if decision.accept is None:
                self.accepted[stopping] = taken - 1
            else:
                accept = decision.accept[stopping]
                accept = np.where(accept == LAST, taken - 1, accept)
                if np.count_nonzero((accept < 0) | (accept >= taken)):
                    raise PolicyError(f"{self.policy.label} accepted a step never taken")
                self.accepted[stopping] = accept
            state.open &= ~stopping
        calling = state.open
        n_calling = int(np.count_nonzero(calling))
        if n_calling == 0:
            return []
        if np.count_nonzero(state.n_steps[calling] >= self.max_steps):
            raise PolicyError(f"{self.policy.label} did not stop within {self.max_steps} steps")
        wanted = targets if n_calling == len(targets) else targets[calling]
        counts = count_models(wanted, len(state.models))
        if int(counts.sum()) != n_calling:  # an index that is no model's
            raise PolicyError(f"{self.policy.label} asked for a model index out of range")
        for m, count in enumerate(counts.tolist()):
            if count == n_calling:
                return [(m, np.flatnonzero(calling))]
        return [
            (int(m), np.flatnonzero(calling & (targets == m)))
            for m in np.flatnonzero(counts)
        ]

    def record(self, model: int, idx: np.ndarray, result: StepResult) -> None:
        own = self.policy.own_cost(self.state.models[model])
        if own is not None:
            result = charged(result, *own)
        self.state.record(model, idx, result)

    def within(self, groups: list[tuple[int, np.ndarray]], estimator: Estimator,
               limits: Limits, elapsed_ms: np.ndarray, stand_ins: bool = True
               ) -> list[tuple[int, np.ndarray]]:
        """The calls among ``groups`` that the limits allow (see policies.limits); the
        queries that must stop there keep their last answer."""
        s = self.state
        groups, stop, reasons = within(groups, s.n_steps, s.steps.total("cost_usd"),
                                       elapsed_ms, estimator, s.queries, s.models, limits,
                                       stand_ins)
        self.stop_at_last(stop)
        self.degraded.update(reasons)
        return groups

    def stop_at_last(self, idx: np.ndarray) -> None:
        self.state.open[idx] = False
        self.accepted[idx] = self.state.n_steps[idx] - 1

    def trace(self) -> Trace:
        s = self.state
        return Trace(s.models, s.queries, s.n_steps, self.accepted, s.steps, s.answers,
                     s.completions, s.signal_calls, dict(self.degraded))


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

    limits: Limits | None = options.limits or None
    started = options.started if options.started is not None else time.perf_counter()
    while groups := await pending():
        if limits is not None:
            elapsed = np.full(len(queries), (time.perf_counter() - started) * 1000)
            if not (groups := episode.within(groups, backend, limits, elapsed,
                                             options.fallback)):
                continue
        first = episode.state.n_steps
        calls = [backend.acall(m, queries, idx,
                               options if options.sink is not None and (first[idx] == 0).all()
                               else later)
                 for m, idx in groups]
        if limits is None or limits.max_latency_ms is None:
            results = await gather_all(calls)
        else:
            left = limits.max_latency_ms / 1000 - (time.perf_counter() - started)
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    results = await gather_all(calls)
            except TimeoutError:
                out_of_time(episode, np.concatenate([idx for _, idx in groups]), limits)
                continue
        for (model, idx), result in zip(groups, results, strict=True):
            episode.record(model, idx, result)
    return episode.trace()


def out_of_time(episode: Episode, idx: np.ndarray, limits: Limits) -> None:
    """The deadline passed during a call: its queries keep their last answer, if any."""
    if (episode.state.n_steps[idx] == 0).any():
        raise LimitError(LATENCY, f"no answer within {LATENCY} = {limits.max_latency_ms:g}",
                         during_call=True)
    episode.stop_at_last(idx)
    episode.degraded.update({int(i): "stopped: the deadline passed during the next call"
                             for i in idx})


def run_policy(policy: Policy, backend: Backend, queries: Queries,
               limits: Limits | None = None) -> Trace:
    """Run a policy to completion over a batch, calling the backend synchronously. With
    ``limits`` (and a backend that estimates), each query is held to them on its own
    clock: the recorded latencies of the calls it made."""
    episode = Episode(policy, backend.models, queries)
    while groups := episode.pending():
        if limits:
            elapsed = episode.state.steps.total("latency_ms")
            if not (groups := episode.within(groups, backend, limits, elapsed)):
                continue
        for model, idx in groups:
            episode.record(model, idx, backend.call(model, queries, idx))
    return episode.trace()
