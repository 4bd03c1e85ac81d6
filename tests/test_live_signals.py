"""Live confidence signals on the real local models, with their cost counted."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from llmtriage.backends.base import Queries
from llmtriage.backends.catalog import default_catalog
from llmtriage.backends.live import ChatRequest, Completion, TokenLogprob
from llmtriage.backends.pool import ModelPool
from llmtriage.policies import ThresholdCascade, arun_policy
from llmtriage.signals.live import Agreement, LogprobSignal, SelfVerification, yes_probability

# Runs the embedded local models: `pytest -m 'not local_models'` skips it.
pytestmark = pytest.mark.local_models

LARGE = "qwen2.5-coder-1.5b"


@pytest.fixture(scope="module")
def pool():
    return ModelPool(default_catalog(),
                     request_for=lambda q: ChatRequest.ask(q, max_tokens=16))


def fake_answer(text: str) -> Completion:
    return Completion(model=LARGE, text=text, tokens_in=0, tokens_out=0, latency_ms=0.0,
                      cost_usd=0.0)


def test_yes_probability_reads_the_first_token():
    c = Completion(LARGE, "Yes", 1, 1, 1.0, 0.0, logprobs=[TokenLogprob(
        "Yes", np.log(0.6), (("Yes", np.log(0.6)), ("No", np.log(0.2)), ("The", -3.0)))])
    assert yes_probability(c) == pytest.approx(0.75)


def test_self_verification_prefers_the_right_answer(pool):
    verify = SelfVerification()
    request = ChatRequest.ask("What is 17 * 23? Answer with only the number.")

    async def both():
        right = await verify(pool, LARGE, request, fake_answer("391"))
        wrong = await verify(pool, LARGE, request, fake_answer("14"))
        return right, wrong

    right, wrong = asyncio.run(both())
    assert right.confidence > wrong.confidence
    assert len(right.extra) == 1 and right.extra[0].tokens_out == 1


def test_agreement_counts_votes_and_calls(pool):
    agree = Agreement(k=3)
    request = ChatRequest.ask("What is the capital of France? Answer with one word.",
                              max_tokens=8)

    async def run():
        answer = await pool.complete(LARGE, request)
        return await agree(pool, LARGE, request, answer)

    signal = asyncio.run(run())
    assert signal.confidence == 1.0  # four times "Paris"
    assert len(signal.extra) == 3


def test_a_signals_calls_are_paid_by_the_step_that_used_it():
    questions = ["What is 6 * 7? Answer with only the number.",
                 "What is the capital of Japan? Answer with one word."]
    policy = ThresholdCascade(["qwen2.5-coder-0.5b", LARGE], threshold=0.5)

    pool = ModelPool(default_catalog(),
                     request_for=lambda q: ChatRequest.ask(q, max_tokens=12))

    def run(signal):
        # The policy names its signal; the loop scores its answers with that signal.
        return asyncio.run(arun_policy(policy.with_params(signal=signal), pool,
                                       Queries.from_texts(questions)))

    plain = run("min_logprob")
    verified = run("self-verify")
    assert not any(plain.signal_calls)
    extra = [c for calls in verified.signal_calls for c in calls]
    assert len(extra) == int(verified.n_steps.sum())  # one verification per answer
    assert all(c.tokens_out == 1 for c in extra)
    # Each step's latency, energy and tokens include its verification call.
    for q in range(len(questions)):
        answers = verified.completions[q]
        checks = verified.signal_calls[q]
        expected = sum(c.latency_ms for c in answers) + sum(c.latency_ms for c in checks)
        assert verified.total("latency_ms")[q] == pytest.approx(expected)
        tokens = sum(c.tokens_out for c in answers) + sum(c.tokens_out for c in checks)
        assert verified.total("tokens_out")[q] == pytest.approx(tokens)


def test_an_answer_cut_off_at_the_token_limit_is_not_trusted(pool):
    """A rambling or looping answer stopped by max_tokens has likely tokens all along, so its
    mean logprob looks confident; the live confidences (and `collect`) score it -inf."""
    from llmtriage.signals.logprob import mean_logprob, min_logprob

    long = asyncio.run(pool.complete("smollm2-135m", ChatRequest.ask(
        "Write a long story about a dragon.", max_tokens=8)))
    short = asyncio.run(pool.complete("qwen2.5-coder-0.5b", ChatRequest.ask(
        "What is 2 + 2? Answer with only the number.", max_tokens=8)))
    assert long.finish_reason == "length" and short.finish_reason == "stop"
    assert mean_logprob(long) == min_logprob(long) == -np.inf
    # The live signals a policy names score it the same way (one rule, not two).
    for stat in ("mean", "min", "first_margin"):
        assert LogprobSignal(stat).score(long) == -np.inf
    assert LogprobSignal("mean").score(short) == mean_logprob(short)
    assert np.isfinite(mean_logprob(short)) and mean_logprob(short) <= 0.0
