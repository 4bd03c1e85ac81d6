"""Confidence signals that run live, with their own cost.

A signal looks at a model's answer and returns a confidence plus the extra completions it
needed. The pool adds those completions' cost, tokens, latency and energy to the step that
produced the answer, so a cascade that verifies its answers pays for the verification in
every report, exactly as it would in production.

Policies name the signal they read (``signal = "mean_logprob"``); :func:`signal_named` turns
the name into the live signal, so a policy fitted on a table's recorded confidence is fed the
same statistic of each live answer. The names: ``mean_logprob``, ``min_logprob``,
``first_margin``, ``self-verify``, ``agreement``.

- :class:`LogprobSignal`: statistics of the answer's own token logprobs (free); an answer
  cut off at the token limit scores -inf, as `triage collect` records it.
- :class:`SelfVerification` (as in AutoMix): the same model is asked whether the answer is
  correct; the confidence is P("yes") read from its logprobs (one short extra call).
- :class:`Agreement` (as in mixture-of-thought cascades): ``k`` more sampled answers; the
  confidence is the vote share of the majority answer (``k`` extra calls).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import Protocol

from llmtriage.backends.live import ChatRequest, Completion
from llmtriage.data.errors import DataError
from llmtriage.probes.graders import first_line, normalize
from llmtriage.signals.logprob import statistic


class Completer(Protocol):
    async def complete(self, name: str, request: ChatRequest) -> Completion: ...


@dataclass
class Signal:
    confidence: float
    extra: list[Completion]


class LogprobSignal:
    def __init__(self, stat: str = "mean") -> None:
        if stat not in ("mean", "min", "first_margin"):
            raise ValueError(f"stat must be mean, min or first_margin, not {stat!r}")
        self.stat = stat
        self.name = {"mean": "mean_logprob", "min": "min_logprob"}.get(stat, stat)

    def score(self, answer: Completion) -> float:
        return statistic(answer, self.stat)

    async def __call__(self, pool: Completer, model: str, request: ChatRequest,
                       answer: Completion) -> Signal:
        return Signal(self.score(answer), [])


VERIFY = ("Question: {question}\nProposed answer: {answer}\n"
          "Is the proposed answer correct? Reply with yes or no.")


def yes_probability(completion: Completion) -> float:
    """P(yes) / (P(yes) + P(no)) over the first token's alternatives (NaN if neither)."""
    if not completion.logprobs:
        return float("nan")
    yes = no = 0.0
    for token, logprob in completion.logprobs[0].top or (
            (completion.logprobs[0].token, completion.logprobs[0].logprob),):
        word = token.strip().lower()
        if word in ("yes", "y"):
            yes += math.exp(logprob)
        elif word in ("no", "n"):
            no += math.exp(logprob)
    return yes / (yes + no) if yes + no > 0 else float("nan")


class SelfVerification:
    name = "self-verify"

    def __init__(self, top_logprobs: int = 10) -> None:
        self.top_logprobs = top_logprobs

    async def __call__(self, pool: Completer, model: str, request: ChatRequest,
                       answer: Completion) -> Signal:
        question = request.messages[-1]["content"]
        check = ChatRequest.ask(VERIFY.format(question=question, answer=answer.text.strip()),
                                max_tokens=1, top_logprobs=self.top_logprobs)
        verdict = await pool.complete(model, check)
        return Signal(yes_probability(verdict), [verdict])


def answer_key(text: str) -> str:
    return normalize(first_line(text))


class Agreement:
    name = "agreement"

    def __init__(self, k: int = 3, temperature: float = 0.8) -> None:
        self.k = k
        self.temperature = temperature

    async def __call__(self, pool: Completer, model: str, request: ChatRequest,
                       answer: Completion) -> Signal:
        samples = await asyncio.gather(*(
            pool.complete(model, replace(request, temperature=self.temperature, seed=1 + i))
            for i in range(self.k)))
        votes = Counter(answer_key(c.text) for c in (answer, *samples))
        return Signal(votes.most_common(1)[0][1] / (self.k + 1), list(samples))


class LiveSignal(Protocol):
    name: str

    async def __call__(self, pool: Completer, model: str, request: ChatRequest,
                       answer: Completion) -> Signal: ...


SIGNALS: dict[str, type | tuple] = {
    "mean_logprob": (LogprobSignal, "mean"), "min_logprob": (LogprobSignal, "min"),
    "first_margin": (LogprobSignal, "first_margin"), "self-verify": (SelfVerification,),
    "agreement": (Agreement,),
}


def signal_named(name: str) -> LiveSignal:
    """The live signal a policy names; a clear error for a name no signal has."""
    made = SIGNALS.get(name)
    if made is None:
        raise DataError(f"unknown confidence signal {name!r}; choose among "
                        f"{', '.join(SIGNALS)}")
    cls, *args = made
    return cls(*args)
