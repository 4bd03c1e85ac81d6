"""The comparison harness on the shared data: verdicts, splits, intervals, reports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from llmtriage.data import DataError, OutcomeTable, load_table
from llmtriage.evaluation.compare import compare, default_policies
from llmtriage.evaluation.evaluate import bootstrap_means
from llmtriage.evaluation.report import records
from llmtriage.policies import Policy, RandomMix, SingleModel, registry
from llmtriage.policies.baselines import _once

SETS = [
    ("routerbench", "arc-challenge"), ("routerbench", "mbpp"), ("routerbench", "winogrande"),
    ("routellm", "mmlu"), ("routellm", "gsm8k"), ("routellm", "mt-bench"),
    ("zeroeval", "gsm"), ("zeroeval", "crux"), ("zeroeval", "math-l5"),
    ("llmrouter", None), ("arena_bench_v1", None),
]


@pytest.mark.parametrize(("folder", "task"), SETS)
def test_oracle_beats_every_single_model_on_every_shared_set(data_dir, folder, task):
    table = load_table(str(data_dir / folder), task=task)
    result = compare(table, default_policies(table), bootstrap=0)
    verdict = result.oracle_verdict()
    assert verdict.startswith("oracle beats every single model"), verdict
    # The hull of the oracle's curve is above the single models' hull ("zero router").
    assert result.curve("oracle").aiq > result.zero_router_aiq


class RememberFit(Policy):
    """Always the first model; remembers which prompts it was fitted on."""

    name = "remember"

    def fit(self, table: OutcomeTable):
        self.seen_ = set(table.prompt_ids)
        return self

    def step(self, state):
        return _once(state, 0)


def test_learned_parts_see_only_the_train_split(data_dir):
    table = load_table(str(data_dir / "routerbench"), task="mbpp")
    policy = RememberFit()
    result = compare(table, [policy, SingleModel(table.models[0])], bootstrap=0)
    train = set(table.prompt_ids[table.splits == "train"])
    test = set(table.prompt_ids[table.splits == "test"])
    assert policy.seen_ == train and not policy.seen_ & test
    assert result.curve("remember").points[0].n_queries == len(test)
    assert result.split_sizes == {"test": len(test), "train": len(train)}


def test_routers_are_never_scored_on_their_own_training_prompts_unmarked(data_dir):
    """A file whose every prompt says 'test' left nothing to fit on but the test prompts:
    a router fitted there recovered 42% of the gap on coin-flip outcomes. It is refused;
    an in-sample split asked for by name is scored, and marked as such."""
    table = load_table(str(data_dir / "routerbench"), task="mbpp")
    test_only = table.split("test")

    def knn(on: OutcomeTable) -> list[Policy]:
        context = registry.Context.of(on)
        return [SingleModel(on.models[0]),
                registry.build_one("knn", context, {"embedder": "hashing"})]

    with pytest.raises(DataError, match="no prompts in split 'train': fitting knn"):
        compare(test_only, knn(test_only), bootstrap=0)
    bounds = compare(test_only, default_policies(test_only), bootstrap=0)  # nothing learned
    assert bounds.in_sample == () and not any("in-sample" in n for n in bounds.notes)
    honest = compare(table, knn(table), bootstrap=0)
    assert honest.in_sample == () and not any(r["in_sample"] for r in records(honest))
    flattered = compare(table, knn(table), split="train", bootstrap=0)
    assert flattered.in_sample == ("knn",)
    assert any(n.startswith("in-sample (split 'train'): knn") for n in flattered.notes)
    assert {r["family"] for r in records(flattered) if r["in_sample"]} == {"knn"}


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small = rng.random(200) < 0.7
    large = rng.random(20000) < 0.7
    lo, hi = bootstrap_means({"q": small.astype(float)})["q"]
    assert lo < small.mean() < hi
    lo2, hi2 = bootstrap_means({"q": large.astype(float)})["q"]
    assert (hi2 - lo2) < (hi - lo) / 5
    # Binomial standard error at n=200 is 0.032: the 95% interval is about +-0.064.
    assert 0.09 < hi - lo < 0.16


def test_two_model_report_has_routellm_metrics(data_dir):
    table = load_table(str(data_dir / "routellm"), task="gsm8k")
    base = default_policies(table)
    coin = next(p for p in base if p.name == "random")
    # A random router recovers half the gap in expectation; one coin is one draw of it.
    seeds = [coin.with_params(seed=s) for s in range(1, 6)]
    result = compare(table, base, bootstrap=200)
    draws = compare(table, seeds, bootstrap=0).curves
    assert np.mean([c.apgr for c in draws]) == pytest.approx(0.5, abs=0.05)
    assert np.mean([c.cpt["50%"] for c in draws]) == pytest.approx(0.5, abs=0.1)
    oracle = result.curve("oracle")
    assert oracle.apgr > 0.9 and oracle.cpt["80%"] < 0.3
    recs = records(result)
    assert {"policy", "quality", "cost_per_query", "latency_ms", "calls_per_query", "aiq",
            "apgr"} <= set(recs[0])
    assert all(r["ci"]["quality"][0] <= r["quality"] <= r["ci"]["quality"][1] for r in recs)
    assert any(r["on_frontier"] for r in recs)


@pytest.mark.slow
def test_bench_command_writes_json_and_plot(data_dir, tmp_path):
    out, png = tmp_path / "gsm8k.json", tmp_path / "gsm8k.png"
    run = subprocess.run(
        [sys.executable, "-m", "llmtriage.cli", "bench", f"routellm:{data_dir / 'routellm'}",
         "--task", "gsm8k", "--json", str(out), "--plot", str(png), "--bootstrap", "100"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "oracle beats every single model" in run.stdout
    assert "price gpt-4-1106-preview: $24.7" in run.stdout  # the prices used are printed
    recs = json.loads(out.read_text())
    assert isinstance(recs, list)
    random = [r for r in recs if r["family"] == "random"]
    assert len(random) == 11 and all(r["apgr"] is not None for r in random)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_random_mix_curve_is_between_its_endpoints(data_dir):
    table = load_table(str(data_dir / "routerbench"), task="winogrande")
    weak, strong = "mistralai/mistral-7b-chat", "gpt-4-1106-preview"
    result = compare(table, [SingleModel(weak), SingleModel(strong), RandomMix(weak, strong)],
                     bootstrap=0)
    pts = result.curve("random").points
    costs = [p.cost_per_query for p in pts]
    assert costs == sorted(costs)
    lo, hi = result.curve(weak).points[0], result.curve(strong).points[0]
    assert pts[0].quality == pytest.approx(lo.quality)
    assert pts[-1].quality == pytest.approx(hi.quality)


@pytest.mark.slow
def test_prompt_clusters_stand_in_for_the_tasks_a_table_does_not_record(data_dir):
    """RouterBench's three tasks with their labels hidden: k-means on the prompts' features
    finds them again, so holding a cluster out holds out prompts unlike any fitted on."""
    from llmtriage.data.table import TEST
    from llmtriage.evaluation.generalisation import held_out_tasks, prompt_clusters
    from llmtriage.signals.embedder import embedder_named

    table = load_table(f"routerbench:{data_dir / 'routerbench'}")
    groups = prompt_clusters(table, 3, embedder=embedder_named("hashing"))
    sizes = [int((groups == f"cluster-{i}").sum()) for i in range(3)]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == table.n_prompts
    for label in set(groups.tolist()):
        tasks = table.tasks[groups == label]
        main = max(set(tasks.tolist()), key=tasks.tolist().count)
        assert np.mean(tasks == main) > 0.95, (label, main)
    held = dict(held_out_tasks(table, groups))
    assert sorted(held) == ["cluster-0", "cluster-1", "cluster-2"]
    for label, split in held.items():
        assert np.array_equal(split.splits == TEST, groups == label)
    with pytest.raises(DataError, match="too few"):
        prompt_clusters(table.take(np.arange(5)), 3, embedder=embedder_named("hashing"))
