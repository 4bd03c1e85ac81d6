"""A cascade whose confidence is other models agreeing: answer cheaply, have cheap voters
answer too, and pay for a strong model only when they disagree.

Where a model's own confidence is weak or absent (no logprobs, a learned scorer that
cannot check arithmetic), independent models reaching the same final answer is a strong
signal: on GSM8K two cheap models agree on about 90% of the problems and are then right
about 98% of the time. The voters are ordinary calls of the loop, so their cost, latency and
energy are charged on every replay and every live request alike, and the answers are
compared by :func:`llmtriage.signals.agreement.final_answer` on recorded text and live text
the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llmtriage.policies.base import LAST, STOP, Decision, Policy, State, resolve
from llmtriage.policies.params import Share
from llmtriage.signals.agreement import final_answer


class AgreementCascade(Policy):
    name = "agreement-cascade"
    reads_answers = True

    def __init__(self, answerer: str, voters: str | Sequence[str], fallback: str,
                 min_agree: Share = 1.0) -> None:
        """``min_agree``: the share of voters whose final answer must equal the answerer's
        for its answer to be accepted; below it the ``fallback`` model answers."""
        self.answerer = answerer
        self.voters = (voters,) if isinstance(voters, str) else tuple(voters)
        self.fallback = fallback
        self.min_agree = min_agree
        if not self.voters:
            raise ValueError("it needs at least one voter")
        if not 0.0 < float(min_agree) <= 1.0:
            raise ValueError(f"min_agree is a share of voters in (0, 1], not {min_agree}")

    @property
    def ladder(self) -> tuple[str, ...]:
        """Every model it may call, in the order it calls them."""
        return (self.answerer, *self.voters, self.fallback)

    @property
    def curve_name(self) -> str:
        return f"{self.name}({self.answerer}+{','.join(self.voters)}>{self.fallback})"

    def agreement(self, state: State, rows: np.ndarray) -> np.ndarray:
        """Per given query, the share of voters that gave the answerer's final answer (an
        empty answer agrees with nothing)."""
        if state.answers is None:
            raise ValueError("an agreement cascade compares answer texts; this backend "
                             "returned none (a replayed table needs its responses)")
        votes = len(self.voters)
        out = np.zeros(len(rows))
        for n, i in enumerate(rows.tolist()):
            keys = [final_answer(str(text)) for text in state.answers[i][: votes + 1]]
            if keys[0]:
                out[n] = sum(k == keys[0] for k in keys[1:]) / votes
        return out

    def step(self, state: State) -> Decision:
        plan = resolve(state.models, [self.answerer, *self.voters])
        fallback = resolve(state.models, self.fallback)[0]
        k = state.n_steps
        calls = np.full(len(k), STOP, dtype=np.int64)
        accept = np.full(len(k), LAST, dtype=np.int64)
        asking = k < len(plan)
        calls[asking] = plan[k[asking]]
        judged = np.flatnonzero(state.open & (k == len(plan)))
        if len(judged):
            agreed = self.agreement(state, judged) >= self.min_agree - 1e-9
            accept[judged[agreed]] = 0  # the answerer's answer
            calls[judged[~agreed]] = fallback
        return Decision(calls, accept)
