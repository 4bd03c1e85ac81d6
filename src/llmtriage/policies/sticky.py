"""Sticky sessions as a policy: a query pinned to a model goes to that model, once.

A conversation's next turn should be answered by the model that answered the last one, or
its answers change voice (and quality) from turn to turn. Whoever knows the sessions (the
gateway) says so per query (``Queries.pinned``); :class:`Sticky` wraps any policy, calls the
pinned model for those queries and lets the wrapped policy decide the rest, so the policy
object that serves is the configured one, not a stand-in swapped in per request.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmtriage.policies.base import STOP, Decision, Policy, State


class Sticky(Policy):
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.policy.name

    @property
    def signal(self) -> str | None:  # type: ignore[override]
        return self.policy.signal

    @property
    def learns(self) -> bool:  # type: ignore[override]
        return self.policy.learns

    @property
    def reads_answers(self) -> bool:  # type: ignore[override]
        return self.policy.reads_answers

    @property
    def label(self) -> str:
        return self.policy.label

    def live_signal(self):  # noqa: ANN201 - the wrapped policy's
        return self.policy.live_signal()

    def own_cost(self, model: str) -> tuple[float, float, float] | None:
        return self.policy.own_cost(model)

    def remember(self, prompt: str) -> Any:
        return self.policy.remember(prompt)

    def learn(self, prompt: Any, model: str, reward: float,
              previous: float | None = None) -> bool:
        return self.policy.learn(prompt, model, reward, previous)

    def step(self, state: State) -> Decision:
        pinned = state.queries.pinned
        if pinned is None or not any(pinned):
            return self.policy.step(state)
        index = {m: i for i, m in enumerate(state.models)}
        pin = np.array([index.get(m, STOP) if m else STOP for m in pinned], dtype=np.int64)
        stuck = pin != STOP
        if stuck.all():  # nothing for the wrapped policy to decide
            decision = Decision(np.full(len(pin), STOP, dtype=np.int64))
        else:
            decision = self.policy.step(state)
        calls = decision.call.copy()
        calls[stuck] = np.where(state.n_steps[stuck] == 0, pin[stuck], STOP)
        accept = None
        if decision.accept is not None:
            accept = decision.accept.copy()
            accept[stuck] = 0  # a pinned query took one step: the pinned model's answer
        return Decision(calls, accept)
