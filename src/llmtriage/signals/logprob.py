"""Confidence from token log-probabilities of an answer.

Raw scales differ by model (SmolLM2's logprobs run far lower than Qwen's), so these are raw
scores for a per-model calibration to turn into probabilities, never thresholds to compare
across models.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmtriage.backends.live import Completion, TokenLogprob


@dataclass(frozen=True)
class LogprobStats:
    mean: float
    min: float
    #: Logprob gap between the first token and its best alternative (0 when unknown).
    first_margin: float
    n: int


def logprob_stats(tokens: list[TokenLogprob] | None) -> LogprobStats:
    """Statistics over the answer's tokens; NaN when the backend gave no logprobs."""
    useful = [t for t in tokens or () if t.token.strip()] or list(tokens or ())
    if not useful:
        nan = float("nan")
        return LogprobStats(nan, nan, nan, 0)
    values = [t.logprob for t in useful]
    first = useful[0]
    alternatives = [lp for tok, lp in first.top if tok != first.token]
    margin = first.logprob - max(alternatives) if alternatives else 0.0
    return LogprobStats(sum(values) / len(values), min(values), margin, len(values))


def cut_off(completion: Completion) -> bool:
    """Whether generation stopped at the token limit: the answer is unfinished (often a
    repetition loop, whose tokens are all likely: its mean logprob looks confident)."""
    return completion.finish_reason == "length"


def statistic(completion: Completion, stat: str) -> float:
    """One statistic (``mean``, ``min``, ``first_margin``) of an answer's token logprobs. An
    answer cut off by the token limit scores -inf: known untrustworthy (NaN would mean
    "unknown"); a loop's tokens are all likely, so its statistics look confident."""
    if cut_off(completion):
        return float("-inf")
    return getattr(logprob_stats(completion.logprobs), stat)


def mean_logprob(completion: Completion) -> float:
    """A live answer's tokens' mean logprob: the ``confidence`` `triage collect` records, so
    what policies fitted on a collected table must be fed live (-inf when cut off)."""
    return statistic(completion, "mean")


def min_logprob(completion: Completion) -> float:
    """A live answer's least likely token's logprob: what the default cascade thresholds
    (-inf when cut off)."""
    return statistic(completion, "min")
