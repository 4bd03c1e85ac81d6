"""Policy search on real recorded outcomes: objectives, cross-validation, the agreement
cascade it can choose, the searched policy as one servable object, the headline numbers
and leave-one-task-out evaluation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from llmtriage.data import DataError, load_table
from llmtriage.evaluation.compare import compare
from llmtriage.evaluation.generalisation import leave_one_task_out
from llmtriage.evaluation.headline import cost_to_reach, headlines
from llmtriage.evaluation.targets import meet_target
from llmtriage.policies import registry
from llmtriage.policies.artifacts import info, load, save
from llmtriage.policies.cascades import AgreementCascade
from llmtriage.policies.search import (
    Objective,
    PolicySearch,
    candidates,
    choose,
    cross_validate,
    ladders,
    replay_outcomes,
    search,
)
from llmtriage.signals.agreement import final_answer

CLI = [sys.executable, "-m", "llmtriage.cli"]
QUICK = ("single", "logistic", "agreement-cascade")


@pytest.fixture(scope="module")
def mbpp(data_dir):
    return load_table(f"routerbench:{data_dir / 'routerbench'}", task="mbpp")


@pytest.fixture(scope="module")
def arc(data_dir):
    return load_table(f"routerbench:{data_dir / 'routerbench'}", task="arc-challenge")


def test_objectives_parse_and_refuse_with_their_reason():
    assert Objective.parse("budget=0.001") == Objective("budget", 0.001)
    goal = Objective.parse("quality=0.8, delta=0.1, minimize=latency")
    assert (goal.kind, goal.value, goal.delta, goal.minimize) == ("quality", 0.8, 0.1, "latency")
    assert str(goal) == "quality=0.8,minimize=latency,delta=0.1"
    for bad, reason in [("cheap", "key=value"), ("budget=1,lam=2", "exactly one"),
                        ("budget=x", "numbers"), ("budget=1,delta=0.1", "quality target"),
                        ("quality=0.8,minimize=joy", "minimize one of"),
                        ("budget=-1", ">= 0"), ("budget=1,colour=red", "unknown key"),
                        ("budget=1,budget=2", "budget is given twice"),
                        ("quality=80", "0 to 1"), ("match=nan", ">= 0"),
                        # Each was accepted: minimize was ignored, and no candidate met
                        # a latency of 0 ms ("saved the closest").
                        ("latency=100,minimize=energy", "minimize goes with a quality"),
                        ("lam=1,minimize=latency", "minimize goes with a quality"),
                        ("latency=0", "no answer comes in 0 ms")]:
        with pytest.raises(DataError, match=reason):
            Objective.parse(bad)


def test_the_agreement_cascade_pays_for_its_voters_and_escalates_on_disagreement(arc):
    test = arc.split("test")
    answerer, voter, fallback = ("mistralai/mixtral-8x7b-chat", "zero-one-ai/Yi-34B-Chat",
                                 "gpt-4-1106-preview")
    policy = AgreementCascade(answerer, [voter], fallback)
    outcome = replay_outcomes(policy, test)
    a, v, f = (test.model_index(m) for m in (answerer, voter, fallback))
    keys = [np.array([final_answer(str(t)) for t in test.responses[:, j]]) for j in (a, v)]
    agree = (keys[0] == keys[1]) & (keys[0] != "")
    assert 0.3 < agree.mean() < 0.95  # the parsed letters do agree, and not always
    np.testing.assert_allclose(outcome["quality"],
                               np.where(agree, test.quality[:, a], test.quality[:, f]))
    np.testing.assert_allclose(outcome["cost_usd"], test.cost_usd[:, a] + test.cost_usd[:, v]
                               + np.where(agree, 0.0, test.cost_usd[:, f]))
    # Agreement is evidence: agreeing answers are right more often than the answerer is.
    assert test.quality[agree, a].mean() > test.quality[:, a].mean() + 0.05


def test_ladders_are_ordered_by_cost_and_end_strong(arc):
    train = arc.split("train")
    cost = dict(zip(train.models, np.nanmean(train.cost_usd, axis=0), strict=True))
    quality = dict(zip(train.models, train.quality.mean(axis=0), strict=True))
    tops = sorted(quality, key=quality.get)[-6:]
    found = ladders(train)
    assert 10 <= len(found) <= 60
    for ladder in found:
        assert 2 <= len(ladder) <= 4
        assert [cost[m] for m in ladder] == sorted(cost[m] for m in ladder)
        assert ladder[-1] in tops


@pytest.mark.slow
def test_cross_validation_is_out_of_fold(mbpp):
    train = mbpp.split("train")
    protos = candidates(train, ("single", "logistic"), embedder="hashing")
    outcomes = cross_validate(train, protos, folds=3)
    n = train.n_prompts
    assert outcomes.values["quality"].shape[1] == n
    # A single model's out-of-fold outcomes are its own column, every prompt once.
    row = outcomes.labels.index(train.models[0])
    assert sorted(outcomes.values["quality"][row]) == sorted(train.quality[:, 0])
    # The router scored on prompts it was not fitted on does worse than on its own
    # training prompts at the same setting (what cross-validation is for).
    router = next(i for i, f in enumerate(outcomes.families) if f == "logistic")
    index, value = outcomes.settings[router]
    fitted = protos[index].fit(train).with_params(lam=value)
    in_sample = replay_outcomes(fitted, train)["quality"].mean()
    assert outcomes.mean("quality")[router] < in_sample


@pytest.mark.slow
def test_the_search_meets_its_budget_and_picks_the_best_under_it(mbpp):
    train = mbpp.split("train")
    singles = np.nanmean(train.cost_usd, axis=0)
    budget = float(np.sort(singles)[6])
    result = search(train, Objective("budget", budget), QUICK + ("mf",), folds=3)
    cv_cost, cv_quality = result.outcomes.mean("cost_usd"), result.outcomes.mean("quality")
    assert result.met and cv_cost[result.chosen] <= budget
    assert cv_quality[result.chosen] == pytest.approx(cv_quality[cv_cost <= budget].max())
    assert result.policy.name == result.outcomes.families[result.chosen]
    rejected = result.alternatives()
    assert rejected[0]["chosen"] and len({r["family"] for r in rejected}) >= 3
    # A budget nothing meets is said so, and the cheapest is returned.
    poor = search(train, Objective("budget", float(singles.min()) / 10), ("single",))
    assert not poor.met and poor.policy.model == train.models[int(np.argmin(singles))]


def test_a_quality_target_with_a_guarantee_is_certified_not_just_reached(mbpp):
    train = mbpp.split("train")
    target = float(np.sort(train.quality.mean(axis=0))[-3])  # the third-best model
    plain = search(train, Objective("quality", target), QUICK)
    sure = choose(train, Objective("quality", target, delta=0.1), plain.outcomes)
    cv_q = sure.outcomes.mean("quality")
    assert cv_q[plain.chosen] >= target
    # Certification asks for a margin: never cheaper than the plain choice.
    cost = sure.outcomes.mean("cost_usd")
    assert cost[sure.chosen] >= cost[plain.chosen]
    if sure.met:
        assert cv_q[sure.chosen] > target


@pytest.mark.slow
def test_the_searched_policy_is_one_object_that_sweeps_saves_and_serves(mbpp, tmp_path):
    policy = PolicySearch(families=QUICK, embedder="hashing").fit(mbpp.split("train"))
    assert len(policy.members_) >= 3
    assert np.all(np.diff(policy.member_cost_) > 0)
    assert np.all(np.diff(policy.member_quality_) > 0)  # a Pareto front, cheapest first
    context = registry.Context.of(mbpp)
    result = compare(mbpp, [*registry.build("single", context), *registry.build("oracle",
                     context), policy], bootstrap=0)
    curve = next(c for c in result.curves if c.family == "search")
    assert len(curve.points) == len(policy.members_)
    # The frozen copy at one budget decides exactly as the live member it names.
    middle = policy.with_params(budget=float(policy.member_cost_[len(policy.members_) // 2]))
    loaded = load(save(middle, tmp_path / "search.npz"))
    test = mbpp.split("test")
    for a, b in zip(replay_outcomes(middle, test).values(), replay_outcomes(loaded, test).values(),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.label == middle.label and middle.member().label in loaded.label


def test_headlines_bound_their_figures(mbpp):
    context = registry.Context.of(mbpp)
    policies = [*registry.build("single", context), *registry.build("oracle", context),
                *registry.build("random", context),
                registry.build_one("knn", context, {"embedder": "hashing"})]
    result = compare(mbpp, policies, bootstrap=0)
    heads = {h.policy: h for h in headlines(result, resamples=100)}
    # Random mixing of two models lies on or under the single models' hull: no gap closed.
    assert heads["random"].gap_recovered <= 1e-9
    for h in heads.values():
        assert h.gap_ci[0] <= h.gap_recovered <= h.gap_ci[1]
    knn = next(c for c in result.curves if c.family == "knn")
    expected = (knn.aiq - result.zero_router_aiq) / (result.curve("oracle").aiq
                                                     - result.zero_router_aiq)
    # Per-prompt outcomes are kept in float32: a point's mean cost moves in the 7th digit.
    assert heads[knn.name].gap_recovered == pytest.approx(expected, rel=1e-4)
    # The least cost to reach a quality, on a hull read off by hand.
    assert cost_to_reach(np.array([1.0, 3.0]), np.array([0.5, 0.9]), 0.7) == pytest.approx(2.0)
    assert cost_to_reach(np.array([1.0, 3.0]), np.array([0.5, 0.9]), 0.95) == np.inf


@pytest.mark.slow
def test_leave_one_task_out_fits_without_the_held_out_task(data_dir):
    table = load_table(f"routerbench:{data_dir / 'routerbench'}")
    sizes = {t: int((table.tasks == t).sum()) for t in set(table.tasks)}
    assert len(sizes) == 3
    seen = []

    def policies():
        context = registry.Context(table.models)
        return [*registry.build("single", context),
                registry.build_one("knn", context, {"embedder": "hashing"})]

    for task, result in leave_one_task_out(table, policies):
        seen.append(task)
        assert result.singles[0].n_queries == sizes[task]
        assert task in result.dataset
    assert sorted(seen) == sorted(sizes)


@pytest.mark.slow
def test_fit_with_an_objective_saves_the_choice_and_prints_what_it_beat(mbpp, data_dir,
                                                                        tmp_path):
    out = tmp_path / "chosen.npz"
    run = subprocess.run([*CLI, "fit", f"routerbench:{data_dir / 'routerbench'}", "--task",
                          "mbpp", "--objective", "lam=300", "--families",
                          "single,logistic,agreement-cascade", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    text = " ".join(run.stdout.split())
    assert "policy search for lam=300" in text and f"wrote {out}" in text
    policy = load(out)
    assert policy.name in ("single", "logistic", "agreement-cascade")
    recorded = info(out)
    assert recorded["objective"] == "lam=300" and recorded["cv_estimate"]["quality"] > 0.3
    bad = subprocess.run([*CLI, "fit", f"routerbench:{data_dir / 'routerbench'}", "--task",
                          "mbpp", "--objective", "latency=500", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "records no latency_ms" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_shipped_default_is_a_searched_policy_over_the_embedded_ladder():
    from llmtriage.backends.catalog import default_catalog
    from llmtriage.policies.defaults import (
        FITTED_LADDER,
        FITTED_OBJECTIVE,
        fitted_default,
        models_used,
    )

    policy = fitted_default(default_catalog().names())
    assert policy is not None and getattr(policy, "frozen_", False)
    assert models_used(policy) <= set(default_catalog().names())
    assert info(FITTED_LADDER)["objective"] == FITTED_OBJECTIVE
    assert info(FITTED_LADDER)["met_on_cv"] is True
    assert fitted_default(["some-other-model"]) is None


def test_match_asks_for_the_best_single_models_quality_less_a_margin(mbpp):
    train = mbpp.split("train")
    result = search(train, Objective.parse("match=0.02"), ("single", "agreement-cascade"))
    q, cost = result.outcomes.mean("quality"), result.outcomes.mean("cost_usd")
    singles = [r for r, f in enumerate(result.outcomes.families) if f == "single"]
    target = q[singles].max() - 0.02
    assert result.met and q[result.chosen] >= target - 1e-9
    assert cost[result.chosen] == pytest.approx(cost[q >= target - 1e-9].min())


@pytest.mark.slow
def test_task_folds_hold_each_task_out(data_dir):
    from llmtriage.policies.search.crossval import split_folds

    table = load_table(f"routerbench:{data_dir / 'routerbench'}").split("train")
    folds = split_folds(table, "task")
    assert len(folds) == 3
    for kept, held in folds:
        assert len(set(table.tasks[held])) == 1
        assert set(table.tasks[held]).isdisjoint(set(table.tasks[kept]))
    result = search(table, Objective("lam", 100.0), ("single", "logistic"), folds="task",
                    embedder="hashing")
    assert result.outcomes.values["quality"].shape[1] == table.n_prompts
    with pytest.raises(DataError, match="one task"):
        split_folds(table.filter_task("mbpp"), "task")
    with pytest.raises(DataError, match="folds must be"):
        split_folds(table, 1)


def coin_flips(tmp_path, n: int, train: int, column: str, value, seed: int):
    """A long-format file of ``n`` prompts (the first ``train`` in train) x three models
    priced 0.1, 0.2 and 0.5, each right at random with a random confidence; per prompt
    ``column`` (prompt text or task) holds ``value(i)``."""
    rng = np.random.default_rng(seed)
    rows = [f"p{i},{value(i)},{m},{rng.integers(0, 2)},{c},{-rng.random():.3f},"
            f"{'train' if i < train else 'test'}"
            for i in range(n) for m, c in (("a", 0.1), ("b", 0.2), ("c", 0.5))]
    path = tmp_path / "coins.csv"
    path.write_text(f"prompt_id,{column},model,quality,cost_usd,confidence,split\n"
                    + "\n".join(rows) + "\n")
    return path


def test_a_tiny_table_is_searched_or_refused_with_the_reason(tmp_path):
    """Every family on 8 training prompts (the MLP once needed 20 for early stopping's
    held-out tenth: a scikit-learn error); 1 prompt is refused, not folded into nothing."""
    table = load_table(str(coin_flips(tmp_path, 12, 8, "prompt",
                                      lambda i: f"question number {i}", seed=1)))
    search = PolicySearch(embedder="hashing").fit(table.split("train"))
    assert set(search.seconds_) >= {"logistic", "mlp", "knn", "calibrated-cascade"}
    assert search.members_  # a frontier to serve
    one = table.split("train").take(np.array([0]))
    with pytest.raises(DataError, match="1 prompt.*3-fold cross-validation needs at least 6"):
        PolicySearch(embedder="hashing").fit(one)


def test_families_the_table_cannot_search_are_refused_with_the_reason(arc, data_dir,
                                                                     tmp_path):
    """Naming only families a table cannot support (cascades without a confidence column,
    task-mean on one task, an empty list) once cross-validated nothing and failed with a
    KeyError traceback deep in the choice."""
    train = arc.split("train")
    for families, reason in [(("calibrated-cascade", "cascade-routing"),
                              "calibrated-cascade needs a confidence column"),
                             (("task-mean",), "task-mean needs two tasks"),
                             ((), r"\(none named\)")]:
        with pytest.raises(DataError, match=f"supports none of the searched families.*{reason}"):
            candidates(train, families)
    out = tmp_path / "p.npz"
    result = subprocess.run([*CLI, "fit", f"routerbench:{data_dir / 'routerbench'}", "--task",
                             "arc-challenge", "--objective", "lam=1", "--families", ",",
                             "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr  # a data error
    assert "none named" in " ".join(result.stderr.split()) and not out.exists()


def test_a_table_without_prompt_text_is_searched_without_routers(tmp_path):
    """An outcome matrix (no `prompt` column) gave every prompt the same empty text: its
    routers were constant policies scored as routers, and the search cross-validated five
    of them for nothing. Now a router asked for by name is refused with the reason, and the
    search keeps what the table can inform: single models, task labels, cascades (cascade
    routing over the task-mean router)."""
    path = coin_flips(tmp_path, 60, 40, "task", lambda i: "ab"[i % 2], seed=2)
    table = load_table(str(path))
    assert any(n.startswith("no prompt text") for n in table.notes)  # said where it loads
    train = table.split("train")
    assert not train.has_text
    context = registry.Context(train.models, train)
    for kind in ("knn", "logistic", "mlp", "mf", "sw-ranking", "bandit"):
        with pytest.raises(DataError, match=f"records no prompt text.*a {kind} router"):
            registry.build(kind, context)
    found = {p.name for p in candidates(train)}
    assert found == {"single", "task-mean", "calibrated-cascade", "cascade-routing"}, found
    routing = next(p for p in candidates(train) if p.name == "cascade-routing")
    assert routing.router.name == "task-mean"
    with pytest.raises(DataError, match="knn needs prompt text"):
        candidates(train, ("knn",))
    listed = subprocess.run([*CLI, "policies"], capture_output=True, text=True)
    assert "prompt text" in listed.stdout


def test_a_saved_router_is_not_replayed_on_prompts_without_text(tmp_path):
    """A router (or a search that serves one) saved from a table with text, replayed on a
    table without: every prompt got the empty text's route, reported as the router's."""
    with_text = load_table(str(coin_flips(tmp_path, 60, 40, "prompt",
                                          lambda i: f"question about {'xyz'[i % 3]}", seed=3)))
    saved = registry.build_one("knn", registry.Context.of(with_text), {"embedder": "hashing"})
    save(saved.fit(with_text.split("train")), tmp_path / "knn.npz")
    blind = load_table(str(coin_flips(tmp_path, 60, 40, "task", lambda i: "ab"[i % 2], seed=3)))
    with pytest.raises(DataError, match="records no prompt text.*these saved policies decide "
                                        "on it: knn"):
        compare(blind, [load(tmp_path / "knn.npz")], bootstrap=0)
    with pytest.raises(DataError, match="records no prompt text"):  # triage tune's sweep
        meet_target(load(tmp_path / "knn.npz"), blind.split("test"), "quality", 0.5)
    task_mean = registry.build_one("task-mean", registry.Context.of(blind))
    save(task_mean.fit(blind.split("train")), tmp_path / "task.npz")
    result = compare(blind, [load(tmp_path / "task.npz")], bootstrap=0)  # reads no text
    assert result.curves[0].points
