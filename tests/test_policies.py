"""Policies through the step loop: baselines, cascades, accept semantics, loop guards."""

from __future__ import annotations

import numpy as np
import pytest

from llmtriage.backends import Queries, ReplayBackend
from llmtriage.data import OutcomeTable, load_table
from llmtriage.evaluation.evaluate import evaluate, gold_quality, replay
from llmtriage.policies import (
    STOP,
    Decision,
    Oracle,
    Policy,
    PolicyError,
    RandomMix,
    SingleModel,
    ThresholdCascade,
    run_policy,
)


@pytest.fixture(scope="module")
def gsm8k(data_dir):
    return load_table(f"routellm:{data_dir / 'routellm'}", task="gsm8k")


def ladder_table() -> OutcomeTable:
    """Three prompts, a cheap and a dear model, recorded confidences and latencies."""
    return OutcomeTable.build(
        ["small", "large"],
        ["p0", "p1", "p2"],
        np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]),
        cost_usd=np.array([[1.0, 10.0], [1.0, 10.0], [1.0, 10.0]]),
        latency_ms=np.array([[100.0, 400.0]] * 3),
        confidence=np.array([[0.9, 0.8], [0.2, 0.9], [0.95, 0.1]]),
    )


def test_single_models_reproduce_the_table(gsm8k):
    for model in gsm8k.models:
        point = evaluate(SingleModel(model), gsm8k, bootstrap=0)
        assert point.quality == pytest.approx(gsm8k.mean_quality()[model])
        assert point.cost_per_query == pytest.approx(gsm8k.mean_cost()[model])
        assert point.calls_per_query == 1.0
        assert point.answer_share[model] == 1.0


def test_threshold_cascade_by_hand():
    table = ladder_table()
    trace = replay(ThresholdCascade(["small", "large"], threshold=0.5), table)
    # p0 and p2 stop at "small" (confident), p1 escalates.
    assert trace.n_steps.tolist() == [1, 2, 1]
    assert trace.accepted_model.tolist() == [0, 1, 0]
    assert trace.total("cost_usd").tolist() == [1.0, 11.0, 1.0]
    assert trace.total("latency_ms").tolist() == [100.0, 500.0, 100.0]  # paid in sequence
    point = evaluate(ThresholdCascade(["small", "large"], threshold=0.5), table, bootstrap=0)
    assert point.quality == pytest.approx(2 / 3)
    assert point.calls_per_query == pytest.approx(4 / 3)
    assert point.call_share == {"small": 0.75, "large": 0.25}


def test_cascade_thresholds_span_never_to_always_escalating():
    table = ladder_table()
    never = evaluate(ThresholdCascade(["small", "large"], threshold=-1.0), table, bootstrap=0)
    always = evaluate(ThresholdCascade(["small", "large"], threshold=2.0), table, bootstrap=0)
    assert never.calls_per_query == 1.0 and never.answer_share["small"] == 1.0
    assert always.calls_per_query == 2.0 and always.answer_share["large"] == 1.0


def test_oracle_picks_the_cheapest_correct_model():
    table = ladder_table()
    oracle = Oracle().fit(table)
    trace = replay(oracle, table)
    # p0: both right -> small; p1: only large; p2: none right -> cheapest.
    assert trace.accepted_model.tolist() == [0, 1, 0]
    # With a steep price on cost it falls back to the cheap model everywhere.
    assert replay(oracle.with_params(lam=1.0), table).accepted_model.tolist() == [0, 0, 0]


def test_oracle_on_real_data_is_the_per_prompt_best(gsm8k):
    point = evaluate(Oracle().fit(gsm8k), gsm8k, bootstrap=0)
    assert point.quality == pytest.approx(gsm8k.quality.max(axis=1).mean())


def test_random_mix_hits_its_share_and_is_deterministic(gsm8k):
    weak, strong = gsm8k.models
    for p in (0.0, 0.25, 0.5, 1.0):
        point = evaluate(RandomMix(weak, strong, p=p), gsm8k, bootstrap=0)
        assert point.strong_share == pytest.approx(p, abs=0.04)
    a = replay(RandomMix(weak, strong, p=0.5), gsm8k).accepted_model
    b = replay(RandomMix(weak, strong, p=0.5), gsm8k).accepted_model
    assert (a == b).all()
    other_seed = replay(RandomMix(weak, strong, p=0.5, seed=3), gsm8k).accepted_model
    assert (a != other_seed).any()


def test_batch_of_one_makes_the_same_decisions_as_the_whole_batch(gsm8k):
    """Online serving runs the loop on one query at a time; replay on all at once."""
    weak, strong = gsm8k.models
    policy = RandomMix(weak, strong, p=0.3)
    backend = ReplayBackend(gsm8k)
    whole = run_policy(policy, backend, backend.queries()).accepted_model
    rows = np.arange(0, gsm8k.n_prompts, 97)
    one_by_one = [
        run_policy(policy, backend, Queries(gsm8k.prompt_ids[[r]], gsm8k.prompts[[r]],
                                            gsm8k.tasks[[r]], np.array([r]))).accepted_model[0]
        for r in rows
    ]
    assert one_by_one == whole[rows].tolist()


class BestOfTwo(Policy):
    """Ask both models, accept the more confident answer (tests choosing an earlier step)."""

    name = "best-of-two"

    def step(self, state):
        k = state.n_steps
        if (k == 0).all():
            return Decision.calls(np.zeros(len(k), dtype=np.int64))
        if (k == 1).all():
            return Decision.calls(np.ones(len(k), dtype=np.int64))
        first = state.steps.column("confidence", 0)
        second = state.steps.column("confidence", 1)
        return Decision(np.full(len(k), STOP), np.where(first >= second, 0, 1))


def test_a_policy_can_accept_an_earlier_answer():
    table = ladder_table()
    trace = replay(BestOfTwo(), table)
    assert trace.accepted_model.tolist() == [0, 1, 0]
    quality = gold_quality(table, np.arange(3), trace.accepted_model)
    assert quality.tolist() == [1.0, 1.0, 0.0]
    assert trace.total("cost_usd").tolist() == [11.0, 11.0, 11.0]


class StopsAtOnce(Policy):
    def step(self, state):
        return Decision(np.full(len(state.n_steps), STOP))


class NeverStops(Policy):
    def step(self, state):
        return Decision.calls(np.zeros(len(state.n_steps), dtype=np.int64))


def test_loop_refuses_impossible_decisions():
    table = ladder_table()
    with pytest.raises(PolicyError, match="before calling any model"):
        replay(StopsAtOnce(), table)
    with pytest.raises(PolicyError, match="did not stop"):
        replay(NeverStops(), table)


def test_with_params_copies_without_refitting(gsm8k):
    cascade = ThresholdCascade(list(gsm8k.models)).fit(gsm8k)
    other = cascade.with_params(threshold=0.9)
    assert other.threshold == 0.9 and cascade.threshold == -0.5
    assert other.first_confidence_ is cascade.first_confidence_
    with pytest.raises(TypeError):
        cascade.with_params(lamda=1.0)
