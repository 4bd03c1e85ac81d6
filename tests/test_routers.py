"""Routers on real data with the real embedder: features, learning, artifacts, calibration."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from llmtriage.data import DataError, load_table
from llmtriage.evaluation.compare import compare, default_policies
from llmtriage.evaluation.targets import meet_target
from llmtriage.policies.artifacts import load, save
from llmtriage.policies.routers import ClassifierRouter, KNNRouter
from llmtriage.signals.embedder import MiniLMEmbedder, text_features


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return MiniLMEmbedder(cache_path=tmp_path_factory.mktemp("emb") / "cache.npz")


@pytest.fixture(scope="module")
def mbpp(data_dir):
    return load_table(f"routerbench:{data_dir / 'routerbench'}", task="mbpp")


def test_left_truncation_sees_the_question_after_a_few_shot_prefix(data_dir, embedder):
    arc = load_table(f"routerbench:{data_dir / 'routerbench'}", task="arc-challenge")
    texts = list(arc.prompts[:30])
    assert min(len(t) for t in texts) > 1300  # long shared few-shot prefix
    left = embedder.embed(texts)
    right = MiniLMEmbedder(max_tokens=128)
    right._load()
    right._tokenizer.enable_truncation(128, direction="right")
    head = right.embed(texts)
    pairs = np.triu_indices(30, 1)
    assert (head @ head.T)[pairs].mean() > 0.97  # keeping the prefix: all the same vector
    assert (left @ left.T)[pairs].mean() < 0.8  # keeping the end: the questions differ
    assert np.allclose(np.linalg.norm(left, axis=1), 1.0, atol=1e-4)


def test_embedding_cache_round_trip(embedder, tmp_path):
    vectors = embedder.embed(["What is 2 + 2?", "Name a prime."])
    embedder.save_cache()
    again = MiniLMEmbedder(cache_path=embedder.cache_path)
    assert again._session is None
    assert np.array_equal(again.embed(["Name a prime."]), vectors[1:])
    assert again._session is None  # served from the disk cache, the model never loaded


def test_text_features():
    f = text_features(["def f(x):\n    return x", "Quelle est la capitale de la Géorgie?"])
    assert f[0, 3] == 1.0 and f[1, 3] == 0.0  # code
    assert f[1, 2] > 0 and f[0, 2] == 0  # non-ASCII
    assert f[1, 5] == 1.0  # a question


@pytest.fixture(scope="module")
def fitted(mbpp, embedder):
    train = mbpp.split("train")
    return {"knn": KNNRouter().fit(train, embedder=embedder),
            "logistic": ClassifierRouter().fit(train, embedder=embedder)}


def test_routers_learn_something_real(mbpp, fitted):
    result = compare(mbpp, default_policies(mbpp) + list(fitted.values()), bootstrap=0)
    random = result.curve("random").aiq
    for name in fitted:
        curve = result.curve(name)
        assert curve.aiq > random + 0.05, (name, curve.aiq, random)
        assert curve.aiq > 0.66
        # lam = 0 buys the best predicted model; the largest lam the cheapest model.
        assert curve.points[0].cost_per_query > 10 * curve.points[-1].cost_per_query
    # Predicted quality ranks prompts: gpt-4's predicted success separates its outcomes.
    test = mbpp.split("test")
    j = test.model_index("gpt-4-1106-preview")
    p = fitted["logistic"].predict_quality(test.prompts)[:, j]
    right = test.quality[:, j] == 1
    assert p[right].mean() > p[~right].mean()


def test_hyperparameters_are_chosen_by_cross_validation(fitted):
    knn = fitted["knn"]
    assert set(knn.cv_scores_) == {5, 10, 25, 50, 100}
    assert knn.chosen_ == max(knn.cv_scores_, key=knn.cv_scores_.get)


def test_target_rule_picks_the_cheapest_good_enough_model(fitted):
    router = fitted["logistic"]
    predicted = np.array([[0.2, 0.9, 0.95] + [0.0] * 8])
    costs = router.cost_
    chosen = router.with_params(target=0.85).choose(predicted)[0]
    assert chosen in (1, 2) and costs[chosen] == min(costs[1], costs[2])


@pytest.mark.parametrize("name", ["knn", "logistic"])
def test_artifact_round_trip(fitted, mbpp, tmp_path, name):
    path = save(fitted[name], tmp_path / f"{name}.npz", source="mbpp")
    loaded = load(path)
    test = mbpp.split("test")
    np.testing.assert_allclose(loaded.predict_quality(test.prompts),
                               fitted[name].predict_quality(test.prompts), atol=1e-6)
    assert loaded.models_ == fitted[name].models_


def test_bad_artifacts_are_refused(tmp_path):
    evil = tmp_path / "evil.npz"
    np.savez(evil, __header__=np.array([{"class": "knn"}], dtype=object))
    with pytest.raises(DataError, match="not a Triage policy artifact"):
        load(evil)
    other = tmp_path / "other.npz"
    np.savez(other, __header__=np.array('{"format": "something-else", "version": 9}'))
    with pytest.raises(DataError, match="unsupported artifact"):
        load(other)


def test_calibration_meets_a_quality_target_on_held_out_data(fitted, mbpp):
    held_out = mbpp.split("test")
    result = meet_target(fitted["logistic"], held_out, "quality", 0.6)
    assert result.met and result.achieved >= 0.6
    lo, hi = result.achieved_ci
    assert lo <= result.achieved <= hi and hi - lo > 0.02
    cheap = meet_target(fitted["logistic"], held_out, "cost", 1e-4)
    assert cheap.cost_per_query <= 1e-4 and cheap.quality < result.quality
    for target, value in [("quality", -1.0), ("quality", float("nan")),
                          ("strong_share", 2.0), ("cost", float("inf"))]:
        with pytest.raises(ValueError, match=f"a {target} target is"):
            meet_target(fitted["logistic"], held_out, target, value)


def test_onboarding_a_new_model_from_a_small_sample(mbpp, embedder):
    """Train on 10 models, add the 11th from 80 labelled prompts, compare to a full fit."""
    train, test = mbpp.split("train"), mbpp.split("test")
    new = "gpt-4-1106-preview"
    others = [m for m in mbpp.models if m != new]
    router = ClassifierRouter(c=1.0).fit(train.select_models(others), embedder=embedder)
    j = train.model_index(new)
    sample = np.arange(80)
    router.add_model(new, train.prompts[sample], train.quality[sample, j],
                     float(train.cost_usd[:, j].mean()))
    full = ClassifierRouter(c=1.0).fit(train, embedder=embedder)
    onboarded = router.predict_quality(test.prompts)[:, -1]
    retrained = full.predict_quality(test.prompts)[:, full.models_.index(new)]
    assert router.models_[-1] == new
    assert np.corrcoef(onboarded, retrained)[0, 1] > 0.5


@pytest.mark.slow
def test_fit_and_tune_commands(data_dir, tmp_path):
    source = f"routerbench:{data_dir / 'routerbench'}"
    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", "fit", source, "--task",
                          "mbpp", "--policy", "knn", "--out", str(tmp_path / "r.npz")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "cross-validated AIQ" in run.stdout and (tmp_path / "r.npz").is_file()
    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", "tune",
                          str(tmp_path / "r.npz"), source, "--task", "mbpp", "--target",
                          "strong_share", "--value", "0.2"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "strong_share" in run.stdout and "95% CI" in run.stdout


@pytest.fixture(scope="module")
def more_fitted(mbpp, embedder):
    from llmtriage.policies.routers import EloRouter, MFRouter

    train = mbpp.split("train")
    return {"mf": MFRouter().fit(train, embedder=embedder),
            "sw-ranking": EloRouter().fit(train, embedder=embedder)}


def test_mf_and_similarity_ranking_learn(mbpp, more_fitted):
    result = compare(mbpp, default_policies(mbpp) + list(more_fitted.values()), bootstrap=0)
    for name in more_fitted:
        assert result.curve(name).aiq > result.curve("random").aiq + 0.05
    assert more_fitted["sw-ranking"].chosen_ in (2.0, 5.0, 10.0, 20.0)


@pytest.mark.parametrize("name", ["mf", "sw-ranking"])
def test_more_artifacts_round_trip(more_fitted, mbpp, tmp_path, name):
    path = save(more_fitted[name], tmp_path / f"{name}.npz")
    test = mbpp.split("test")
    np.testing.assert_allclose(load(path).predict_quality(test.prompts),
                               more_fitted[name].predict_quality(test.prompts), atol=1e-5)


def test_mf_learns_from_preferences_alone(mbpp, embedder):
    from llmtriage.policies.routers import MFRouter

    train = mbpp.split("train")
    router = MFRouter(l2=1e-2).fit_preferences(train)
    predicted = router.predict_quality(train.prompts).mean(axis=0)
    actual = train.quality.mean(axis=0)
    ranks = np.argsort(np.argsort(predicted)), np.argsort(np.argsort(actual))
    assert np.corrcoef(*ranks)[0, 1] > 0.6  # who beats whom recovers the models' order


def test_battles_by_hand():
    from llmtriage.policies.routers.elo import battles

    wins = battles(np.array([[1.0, 0.0, 1.0]]))[0]
    assert wins.tolist() == [[0, 1, 0.5], [0, 0, 0], [0.5, 1, 0]]


@pytest.mark.slow
def test_bandit_learns_online_and_its_updates_are_exact(data_dir, embedder):
    from llmtriage.policies.routers import LinUCBRouter

    table = load_table(f"llmrouter:{data_dir / 'llmrouter'}").split("test")
    bandit = LinUCBRouter().fit(table.take(np.arange(50)), embedder=embedder)
    stream = table.take(np.arange(50, table.n_prompts))
    x = bandit.context(stream.prompts)
    start = bandit.choose(x).copy()
    gains = []
    for t in range(len(x)):
        m = int(bandit.choose(x[t : t + 1])[0])
        gains.append(stream.quality[t, m])
        bandit.observe(x[t], m, stream.quality[t, m])
    assert (bandit.choose(x) != start).any()  # feedback changed its mind
    fixed = stream.quality.mean(axis=0).max()
    assert np.mean(gains) > fixed - 0.05
    # Sherman-Morrison keeps A^-1 exact: compare with a direct inverse for the busiest model.
    m = int(bandit.pulls_.argmax())
    a = bandit.ridge * np.eye(x.shape[1])
    picks = []
    replay = LinUCBRouter().fit(table.take(np.arange(50)), embedder=embedder)
    for t in range(len(x)):
        k = int(replay.choose(x[t : t + 1])[0])
        picks.append(k)
        replay.observe(x[t], k, stream.quality[t, k])
    for t, k in enumerate(picks):
        if k == m:
            a += np.outer(x[t], x[t])
    np.testing.assert_allclose(replay.a_inv_[m], np.linalg.inv(a), rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_a_router_on_an_openai_compatible_embeddings_endpoint(mbpp, embedder):
    from pathlib import Path

    from llmtriage.signals.embedder import OpenAIEmbedder

    server = Path(__file__).parent / "servers" / "embeddings.py"
    proc = subprocess.Popen([sys.executable, str(server), "0"], stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stdout.readline().split()[-1])
        remote = OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "all-MiniLM-L6-v2", 384)
        texts = list(mbpp.prompts[:20])
        np.testing.assert_allclose(remote.embed(texts), embedder.embed(texts), atol=1e-5)
        router = KNNRouter(k=25).fit(mbpp.split("train"), embedder=remote)
        local = KNNRouter(k=25).fit(mbpp.split("train"), embedder=embedder)
        test = mbpp.split("test").prompts
        np.testing.assert_allclose(router.predict_quality(test), local.predict_quality(test),
                                   atol=1e-4)
        with pytest.raises(DataError, match="expected"):
            OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "x", 512).embed(["dimension?"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_mlp_router_is_scikit_learns_mlp_and_saves_as_arrays(mbpp, embedder, tmp_path):
    train, test = mbpp.split("train"), mbpp.split("test")
    router = ClassifierRouter(kind="mlp", c=1.0).fit(train, embedder=embedder)
    # Its numpy forward pass is scikit-learn's: refit the same estimator (same seed) and
    # compare, on a model the router did learn (not one it is always right or wrong on).
    j = test.model_index("gpt-3.5-turbo-1106")
    reference = router._estimator(True, 1.0, train.n_prompts).fit(
        router.features(train.prompts), train.quality[:, j])
    x = router.features(test.prompts)
    np.testing.assert_allclose(router._predict(x)[:, j],
                               reference.predict_proba(x)[:, 1], atol=1e-4)
    loaded = load(save(router, tmp_path / "mlp.npz"))
    np.testing.assert_allclose(loaded.predict_quality(test.prompts),
                               router.predict_quality(test.prompts), atol=1e-6)
    # Replayed as saved (lam = 0: the best predicted model), it beats an even coin between
    # the cheapest and the best model; fitted afresh, its whole curve beats random mixing.
    result = compare(mbpp, default_policies(mbpp) + [loaded, router.with_params(lam=0.0)],
                     bootstrap=0)
    saved = result.curve(loaded.label).points
    assert len(saved) == 1
    coin = next(p for p in result.curve("random").points if p.policy.endswith("p=0.5]"))
    assert saved[0].quality > coin.quality
    assert result.curve("mlp").aiq > result.curve("random").aiq + 0.03


@pytest.mark.slow
def test_hashing_embedder_is_fast_features_that_route(data_dir, tmp_path):
    from llmtriage.signals.embedder import HashingEmbedder, embedder_named

    arc = load_table(f"routerbench:{data_dir / 'routerbench'}", task="arc-challenge")
    hashing = HashingEmbedder()
    vectors = hashing.embed(list(arc.prompts[:30]))
    assert vectors.shape == (30, 1024) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    pairs = np.triu_indices(30, 1)
    assert (vectors @ vectors.T)[pairs].mean() < 0.8  # the tail: the questions, not the prefix
    assert np.array_equal(embedder_named(hashing.name).embed(["same text"]),
                          hashing.embed(["same text"]))
    router = ClassifierRouter().with_embedder(hashing)
    result = compare(arc, [p for p in default_policies(arc) if p.name == "single"] + [router],
                     bootstrap=0)
    assert result.curve("logistic/hashing").aiq > result.zero_router_aiq
    loaded = load(save(router, tmp_path / "hashing.npz"))
    assert loaded.curve_name == "logistic/hashing"
    test = arc.split("test")
    np.testing.assert_allclose(loaded.predict_quality(test.prompts),
                               router.predict_quality(test.prompts), atol=1e-6)
    with pytest.raises(DataError, match="unknown embedder 'word2vec'"):
        embedder_named("word2vec")


@pytest.mark.slow
def test_fit_command_with_the_hashing_embedder(data_dir, tmp_path):
    source = f"routerbench:{data_dir / 'routerbench'}"
    command = [sys.executable, "-m", "llmtriage.cli", "fit", source, "--task", "mbpp",
               "--policy", "logistic", "--out", str(tmp_path / "h.npz")]
    run = subprocess.run([*command, "--param", "embedder=hashing"], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert load(tmp_path / "h.npz").curve_name == "logistic/hashing"
    run = subprocess.run([*command, "--param", "embedder=glove"], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode != 0 and "unknown embedder 'glove'" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_bad_parameter_on_the_command_line_is_named_in_one_line(data_dir):
    source = f"routerbench:{data_dir / 'routerbench'}"
    for value, reason in [("[1,2]", "valid integer"), ("-3", "greater than or equal to 1")]:
        run = subprocess.run([sys.executable, "-m", "llmtriage.cli", "bench", source, "--task",
                              "mbpp", "-p", "knn", "--param", f"knn.k={value}"],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 2, run.stderr
        assert "policy knn: parameter k=" in run.stderr and reason in run.stderr
        assert "Traceback" not in run.stderr


def test_the_task_router_routes_by_each_models_mean_on_the_querys_task(data_dir, tmp_path):
    """RouterBench's three tasks: each model's shrunk mean per task, the overall mean for
    a query without a task, an exact leave-one-out view of itself, a saved copy that
    decides alike, and a curve above the single models' hull on the test split (models
    differ by task: Yi-34B is strong on Winogrande and weak on MBPP)."""
    from llmtriage.backends.base import Queries
    from llmtriage.policies.routers import TaskRouter

    table = load_table(f"routerbench:{data_dir / 'routerbench'}")
    train = table.split("train")
    router = TaskRouter(prior_rows=10).fit(train)
    mbpp = train.tasks == "mbpp"
    expected = (train.quality[mbpp].sum(0) + 10 * train.quality.mean(0)) / (mbpp.sum() + 10)
    queries = Queries.from_table(train)
    np.testing.assert_allclose(router.predict_quality(queries)[mbpp], np.tile(
        expected, (mbpp.sum(), 1)))
    np.testing.assert_allclose(router.predict_quality(train.prompts[:3]),
                               np.tile(train.quality.mean(0), (3, 1)))
    loo = router.out_of_fold(train)
    i = int(np.flatnonzero(mbpp)[0])
    others = mbpp.copy()
    others[i] = False
    by_hand = (train.quality[others].sum(0) + 10 * router.overall_) / (others.sum() + 10)
    np.testing.assert_allclose(loo[i], by_hand)
    loaded = load(save(router, tmp_path / "task.npz"))
    np.testing.assert_allclose(loaded.predict_quality(queries), router.predict_quality(queries))
    result = compare(table, [*default_policies(table)[:table.n_models], TaskRouter()],
                     bootstrap=0)
    assert result.curve("task-mean").aiq > result.zero_router_aiq + 0.005
