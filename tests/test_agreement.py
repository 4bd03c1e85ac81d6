"""Cross-model agreement on ZeroEval's recorded GSM8K answers: a confidence that pays for
its voters, and the cascade built on it."""

from __future__ import annotations

import numpy as np
import pytest

from llmtriage.data import DataError, load_table
from llmtriage.evaluation.compare import compare
from llmtriage.policies import SingleModel
from llmtriage.policies.cascades import CalibratedCascade
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
