"""Calibration, calibrated cascades, threshold search and the learned answer scorer."""

from __future__ import annotations

import numpy as np
import pytest

from llmtriage.data import load_table
from llmtriage.evaluation.cascade_search import learn_then_test, outcomes, search_budget
from llmtriage.evaluation.compare import compare, default_policies
from llmtriage.policies.cascades import CalibratedCascade
from llmtriage.policies.defaults import pareto_ladder
from llmtriage.signals.calibration import (
    Calibrator,
    TaskCalibrator,
    expected_calibration_error,
)
from llmtriage.signals.embedder import MiniLMEmbedder
from llmtriage.signals.scorer import AnswerScorer, with_learned_confidence


def test_isotonic_calibration_is_monotone_and_honest():
    rng = np.random.default_rng(0)
    raw = rng.normal(-2, 1, 4000)  # e.g. mean logprobs
    truth = 1 / (1 + np.exp(-(raw + 2) * 2))
    correct = rng.random(4000) < truth
    cal = Calibrator.fit(raw[:2000], correct[:2000])
    p = cal(raw[2000:])
    order = np.argsort(raw[2000:])
    assert (np.diff(p[order]) >= -1e-12).all()
    assert expected_calibration_error(p, correct[2000:]) < 0.05
    assert expected_calibration_error(np.full(2000, 0.9), correct[2000:]) > 0.3
    assert cal(np.array([np.nan]))[0] == pytest.approx(correct[:2000].mean())
    # An answer cut off at the token limit scores -inf: never trusted, on either method.
    assert cal(np.array([-np.inf]))[0] == 0.0
    platt = Calibrator.fit(raw[:2000], correct[:2000], method="platt")
    assert platt(np.array([-np.inf, np.nan, -2.0])).tolist()[:1] == [0.0]


def test_platt_and_degenerate_cases():
    raw = np.linspace(-3, 0, 200)
    correct = raw > -1.5
    platt = Calibrator.fit(raw, correct, method="platt")
    assert platt(np.array([-3.0]))[0] < 0.05 and platt(np.array([0.0]))[0] > 0.95
    flat = Calibrator.fit(raw, np.ones(200, bool))
    assert flat(np.array([-2.0]))[0] == 1.0
    with pytest.raises(ValueError):
        Calibrator.fit(raw, correct, method="magic")


def test_task_calibration_separates_tasks_and_falls_back_to_the_pool():
    """One raw score, two meanings: right on task a, wrong on task b. Each task's map is
    blended with the pooled one by n / (n + prior); a task not seen, or none, gets the
    pooled map exactly."""
    rng = np.random.default_rng(0)
    raw = rng.uniform(-3, 0, 400)
    tasks = np.repeat(["a", "b"], 200)
    correct = tasks == "a"
    cal = TaskCalibrator.fit(raw, correct, tasks, prior_rows=50)
    assert cal.weights == {"a": pytest.approx(0.8), "b": pytest.approx(0.8)}
    probe = np.array([-2.0, -1.0])
    pooled = Calibrator.fit(raw, correct)(probe)
    np.testing.assert_allclose(cal(probe), pooled)
    np.testing.assert_allclose(cal(probe, np.array(["c", ""])), pooled)
    on_a, on_b = cal(probe, np.array(["a", "a"])), cal(probe, np.array(["b", "b"]))
    np.testing.assert_allclose(on_a, 0.8 + 0.2 * pooled)
    np.testing.assert_allclose(on_b, 0.2 * pooled)
    # One task: its own map is the pooled one, so none is kept; nor for a task of fewer
    # than 10 rows (a task column holding an id per prompt makes no map per prompt).
    assert TaskCalibrator.fit(raw, correct, np.full(400, "a")).by_task == {}
    few = TaskCalibrator.fit(raw, correct, np.r_[np.full(395, "a"), np.full(5, "b")])
    assert set(few.by_task) == {"a"}
    ids = TaskCalibrator.fit(raw, correct, np.array([f"id{i}" for i in range(400)]))
    assert ids.by_task == {} and ids.weights == {}


def test_ece_by_hand():
    p = np.array([0.2, 0.2, 0.8, 0.8])
    correct = np.array([0, 0, 1, 0])
    # bin 0.2: |0.2 - 0| = 0.2 (2 items); bin 0.8: |0.8 - 0.5| = 0.3 (2 items)
    assert expected_calibration_error(p, correct) == pytest.approx(0.25)


@pytest.fixture(scope="module")
def scored_mbpp(data_dir, tmp_path_factory):
    table = load_table(f"routerbench:{data_dir / 'routerbench'}", task="mbpp")
    ladder = pareto_ladder(table.split("train"))
    ladder = [ladder[0], ladder[-1]]
    embedder = MiniLMEmbedder(cache_path=tmp_path_factory.mktemp("emb") / "e.npz")
    return with_learned_confidence(table, ladder, scorer=AnswerScorer(embedder)), ladder


@pytest.mark.slow
def test_learned_scorer_separates_right_from_wrong(scored_mbpp):
    table, ladder = scored_mbpp
    test = table.split("test")
    for name in ladder:
        j = test.model_index(name)
        conf, right = test.confidence[:, j], test.quality[:, j] >= 0.5
        assert np.isfinite(conf).all()
        assert conf[right].mean() > conf[~right].mean()
    other = [m for m in table.models if m not in ladder][0]
    assert np.isnan(table.confidence[:, table.model_index(other)]).all()


@pytest.mark.slow
def test_calibrated_cascade_on_scored_answers(scored_mbpp):
    table, ladder = scored_mbpp
    policies = [p for p in default_policies(table) if p.name != "calibrated-cascade"]
    coin = next(p for p in policies if p.name == "random")
    coins = [coin.with_params(seed=s) for s in range(1, 6)]  # random mixing in expectation
    result = compare(table, [*policies, *coins, CalibratedCascade(ladder)], bootstrap=0)
    curve = result.curve("calibrated-cascade")
    assert curve.aiq > np.mean([c.aiq for c in result.curves if c.family == "random"])
    assert {round(p.calls_per_query, 2) for p in curve.points} >= {1.0, 2.0}
    # A threshold above 1 escalates everything: quality and cost of the last rung plus the first.
    last = curve.points[-1]
    j = table.split("test").model_index(ladder[-1])
    assert last.quality == pytest.approx(table.split("test").quality[:, j].mean())


@pytest.mark.slow
def test_budget_search_respects_the_budget(scored_mbpp):
    table, ladder = scored_mbpp
    calib = table.split("train")
    cascade = CalibratedCascade(ladder).fit(calib)
    cheap = calib.mean_cost()[ladder[0]]
    dear = calib.mean_cost()[ladder[-1]]
    budget = cheap + 0.3 * dear
    thresholds, quality, cost = search_budget(cascade, calib, budget)
    assert cost <= budget
    never, _ = outcomes(cascade.with_params(threshold=-1.0), calib)
    assert quality >= never.mean()


@pytest.mark.slow
def test_learn_then_test_certifies_only_what_the_data_supports(scored_mbpp):
    table, ladder = scored_mbpp
    calib = table.split("train")
    cascade = CalibratedCascade(ladder).fit(calib)
    last_error = 1 - calib.mean_quality()[ladder[-1]]
    loose = learn_then_test(cascade, calib, epsilon=last_error + 0.08, delta=0.1)
    assert loose.certified and loose.calibration_error <= last_error + 0.08
    impossible = learn_then_test(cascade, calib, epsilon=0.01, delta=0.1)
    assert not impossible.certified


@pytest.mark.slow
def test_learned_scorer_charges_its_own_cost(data_dir, scored_mbpp):
    table, ladder = scored_mbpp
    plain = load_table(f"routerbench:{data_dir / 'routerbench'}", task="mbpp")
    added = table.cost_usd - plain.cost_usd
    scored = [table.model_index(m) for m in ladder]
    others = [j for j in range(table.n_models) if j not in scored]
    assert (added[:, scored] > 0).all() and np.allclose(added[:, others], 0)
    assert np.allclose(added[:, scored], added[0, scored[0]])  # one measured price an answer
    assert "ms, $" in table.notes[-1] and " J an answer" in table.notes[-1]


def test_a_saved_task_calibrated_cascade_decides_as_fitted_and_refuses_tampering(tmp_path):
    """Saved and loaded, the per-task maps judge each task as fitted; an artifact whose task
    weight is outside [0, 1] is refused in one line."""
    import json

    from llmtriage.backends.replay import ReplayBackend
    from llmtriage.data.table import OutcomeTable
    from llmtriage.policies.artifacts import ArtifactError, load, save
    from llmtriage.policies.loop import run_policy

    rng = np.random.default_rng(1)
    n = 300
    tasks = np.repeat(["a", "b"], n // 2)
    table = OutcomeTable.build(
        ["weak", "strong"], [f"p{i}" for i in range(n)],
        np.column_stack([(tasks == "a").astype(float), np.ones(n)]),
        cost_usd=np.tile([0.1, 1.0], (n, 1)),
        confidence=np.column_stack([rng.uniform(-3, 0, n), np.zeros(n)]),
        tasks=tasks)
    cascade = CalibratedCascade(["weak", "strong"], threshold=0.7).fit(table)
    path = save(cascade, tmp_path / "c.npz")
    backend = ReplayBackend(table)
    trace = run_policy(load(path), backend, backend.queries())
    assert (trace.n_steps == np.where(tasks == "a", 1, 2)).all()
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    text = str(arrays["__header__"])
    weight = json.dumps(cascade.calibrators_["weak"].weights["a"])
    assert text.count(weight) >= 1
    arrays["__header__"] = np.array(text.replace(weight, "5.0", 1))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ArtifactError, match=r"a weight in \[0, 1\] per task"):
        load(tmp_path / "bad.npz")
