"""Cross-model agreement on ZeroEval's recorded GSM8K answers: a confidence that pays for
its voters, and the cascade built on it."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from llmtriage.backends.base import Queries
from llmtriage.data import DataError, load_table
from llmtriage.evaluation.compare import compare
from llmtriage.policies import SingleModel
from llmtriage.policies.base import State
from llmtriage.policies.cascades import CalibratedCascade, CascadeRouter
from llmtriage.policies.routers import KNNRouter
from llmtriage.signals.agreement import agreement_name, final_answer, with_agreement

FIRST, VOTER, TOP = "deepseek-chat", "gemini-1.5-flash", "Llama-3.1-405B-Inst@sambanova"


@pytest.fixture(scope="module")
def gsm(data_dir):
    return load_table(f"zeroeval:{data_dir / 'zeroeval'}", task="gsm")


@pytest.mark.parametrize("text, key", [
    ('{"reasoning": "9 x $2 = $18", "answer": "18"}', "18"),
    ('{"reasoning": "...", "answer": "$1,250.00"}', "1250"),
    ('{"answer": 42}', "42"),
    ("So she pays 3 + 4 = 7 dollars.", "7"),
    ('{"answer": "seven"}', "seven"),
    ("", ""),
])
def test_final_answer(text, key):
    assert final_answer(text) == key


def test_zeroeval_answers_are_loaded_and_match_the_recorded_grades(gsm, data_dir):
    import pandas as pd

    assert gsm.responses is not None and gsm.responses.shape == gsm.quality.shape
    gold = pd.read_parquet(data_dir / "zeroeval" / "gsm_questions.parquet").set_index("id")
    keys = np.array([final_answer(str(gold.loc[i, "answer"]).split("####")[-1])
                     for i in gsm.prompt_ids])
    for model in (FIRST, VOTER, TOP):
        j = gsm.model_index(model)
        right = np.array([final_answer(t) for t in gsm.responses[:, j]]) == keys
        assert (right == (gsm.quality[:, j] >= 0.5)).mean() > 0.99, model


def test_agreement_column_pays_for_its_voter(gsm):
    voted = with_agreement(gsm, FIRST, [VOTER])
    name = agreement_name(FIRST, [VOTER])
    j, a, b = (voted.model_index(m) for m in (name, FIRST, VOTER))
    assert voted.n_models == gsm.n_models + 1
    np.testing.assert_array_equal(voted.quality[:, j], gsm.quality[:, a])
    np.testing.assert_allclose(voted.cost_usd[:, j], gsm.cost_usd[:, a] + gsm.cost_usd[:, b])
    assert set(np.unique(voted.confidence[:, j])) <= {0.0, 1.0}
    agree = voted.confidence[:, j] == 1.0
    right = voted.quality[:, j] >= 0.5
    assert right[agree].mean() > 0.95 > 0.6 > right[~agree].mean()
    with pytest.raises(DataError, match="names a model twice"):
        with_agreement(voted, FIRST, [VOTER])


def test_agreement_cascade_matches_the_best_model_for_a_fraction_of_its_cost(gsm):
    voted = with_agreement(gsm, FIRST, [VOTER])
    cascade = CalibratedCascade([agreement_name(FIRST, [VOTER]), TOP])
    result = compare(voted, [*(SingleModel(m) for m in gsm.models), cascade], bootstrap=0)
    best = max(result.singles, key=lambda p: p.quality)
    point = max(result.curve("calibrated-cascade").points, key=lambda p: p.quality)
    assert point.quality >= best.quality - 0.01
    assert point.cost_per_query < 0.3 * best.cost_per_query


@pytest.fixture(scope="module")
def three_rungs(gsm):
    """A cheap model, the agreement column, and the top model: a ladder worth cascading."""
    voted = with_agreement(gsm, FIRST, [VOTER])
    return voted.select_models(["gemma-2-2b-it", agreement_name(FIRST, [VOTER]), TOP])


@pytest.mark.slow
def test_cascade_routing_beats_routing_alone_on_the_same_models(three_rungs):
    result = compare(three_rungs, [*(SingleModel(m) for m in three_rungs.models), KNNRouter(),
                                   CascadeRouter(KNNRouter())], bootstrap=0)
    routing = result.curve("cascade-routing")
    assert routing.aiq > result.curve("knn").aiq + 0.003
    assert routing.aiq > result.zero_router_aiq + 0.003
    # Between "call everything" and "route once" it tries a model, and escalates only on some.
    assert any(1.05 < p.calls_per_query < 1.9 for p in routing.points)


@pytest.mark.slow
def test_cascade_routing_tries_a_cheap_model_first_for_its_option_value(three_rungs):
    """With the learnt spread of beliefs, a cheap model whose answer may turn out certain is
    worth trying before the top model; with no spread (beliefs never move), the first call is
    exactly the plain router's pick."""
    train, test = three_rungs.split("train"), three_rungs.split("test")
    policy = CascadeRouter(KNNRouter()).fit(train)
    lam = policy.grid(train)[6]
    policy = policy.with_params(lam=lam)
    state = State.start(test.models, Queries.from_table(test))
    first = policy.step(state).call
    routed = policy.router.with_params(lam=lam).step(state).call
    assert (first != routed).mean() > 0.05
    price = policy.router.cost_
    assert (price[first] <= price[routed]).all()  # any change is to a cheaper first call
    still = copy.copy(policy)
    still.moves_ = np.zeros_like(policy.moves_)
    still.draws_ = {}
    np.testing.assert_array_equal(still.step(state).call, routed)


def test_cascade_routing_weighs_sets_of_the_models_nearest_the_hull_only():
    """Its sets of up to three models grow as the cube of the models: 300 models made
    4.5 million sets a step, and a search of hours. Above 12 it weighs the 12 nearest the
    cost-quality hull."""
    from itertools import combinations

    from llmtriage.data.table import OutcomeTable
    from llmtriage.policies.cascades.routing import MAX_SET_MODELS
    from llmtriage.policies.defaults import near_hull
    from llmtriage.signals.embedder import embedder_named

    rng = np.random.default_rng(0)
    n, m = 80, 20
    skill = np.linspace(0.2, 0.9, m) - np.where(np.arange(m) % 3 == 1, 0.15, 0.0)
    right = (rng.random((n, m)) < skill).astype(float)
    table = OutcomeTable.build(
        [f"m{j:02d}" for j in range(m)], [f"p{i}" for i in range(n)], right,
        prompts=[f"question {i} about {['maths', 'facts', 'code'][i % 3]}" for i in range(n)],
        cost_usd=np.tile(np.geomspace(1e-6, 1e-3, m), (n, 1)),
        confidence=np.log(np.clip(right * 0.6 + rng.random((n, m)) * 0.4, 1e-3, 1.0)))
    router = KNNRouter(k=5).with_embedder(embedder_named("hashing"))
    policy = CascadeRouter(router, max_calls=3).fit(table)
    pool = near_hull(table, MAX_SET_MODELS)
    assert len(pool) == MAX_SET_MODELS and {j for s in policy.sets_ for j in s} == set(pool)
    assert len(policy.sets_) == sum(len(list(combinations(pool, k))) for k in (1, 2, 3))
    decision = policy.step(State.start(table.models, Queries.from_table(table)))
    assert set(decision.call.tolist()) <= set(pool)  # a first call: always one of them
