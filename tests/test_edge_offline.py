"""Device and cloud offline: benchmark questions as probes, joint tables, outages, limits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from llmtriage.backends.replay import ReplayBackend
from llmtriage.data import load_table
from llmtriage.data.joint import CloudTiming, cloud_models, join_tiers, over_link
from llmtriage.data.loaders import zeroeval
from llmtriage.evaluation.evaluate import replay
from llmtriage.evaluation.network import Outages, served
from llmtriage.policies.baselines import SingleModel, ThresholdCascade
from llmtriage.policies.limits import COST, LATENCY, LimitError, Limits
from llmtriage.policies.loop import run_policy
from llmtriage.probes import load_probes, prompt_of
from llmtriage.probes.benchmarks import arc_gold
from llmtriage.probes.graders import grade_literal

DEVICE = "qwen2.5-coder-0.5b"


@pytest.mark.parametrize("answer,gold,ok", [
    ("[(4, 1), (4,1)]", "[(4, 1), (4, 1)]", True),
    ('assert f([1]) == "abc"', "'abc'", True),
    ("```python\nassert f(1) == 3\n```", "3", True),
    ("`[1, 2]`.", "[1,2]", True),
    ("{'a': 1}", '{"a": 1}', True),
    ("4", "5", False),
    ("The answer is 3", "3", False),
    ("(" * 5000, "1", False),  # too deep to parse: wrong, not a crash
])
def test_literal_grader(answer, gold, ok):
    assert grade_literal(answer, gold) is ok


def test_benchmark_probe_sets(data_dir):
    crux = load_probes(f"crux:{data_dir / 'zeroeval'}")
    assert len(crux) == 800 and {p.grader for p in crux} == {"literal"}
    assert prompt_of(crux[0]).startswith(crux[0].question)  # the published question
    arc = load_probes(f"arc:{data_dir / 'routerbench'}")
    assert prompt_of(arc[0]) == arc[0].question  # verbatim, as the cloud models saw it
    for split in ("train", "test"):
        frame = pd.read_csv(data_dir / "routerbench" / f"arc_challenge_{split}.csv")
        gold, how = arc_gold(frame)
        assert sum(how.values()) == len(frame)
        # Where gpt-4 was right, its letter is the recovered gold.
        right = (frame["gpt-4-1106-preview"] == 1) & (gold != "")
        letters = frame.loc[right, "gpt-4-1106-preview|model_response"].str.extract(
            r"([A-D])")[0]
        assert (letters == gold[right]).mean() > 0.99
    assert len(arc) == 1465


@pytest.fixture(scope="module")
def joint(data_dir, tmp_path_factory):
    """Three CRUXEval questions answered by the 0.5B here, joined with ZeroEval's models."""
    out = tmp_path_factory.mktemp("edge") / "crux.csv"
    subprocess.run([sys.executable, "-m", "llmtriage.cli", "collect", "--out", str(out),
                    "--probes", f"crux:{data_dir / 'zeroeval'}", "--sample", "3",
                    "--models", DEVICE], check=True, capture_output=True, timeout=600)
    cloud = zeroeval.load(data_dir / "zeroeval", task="crux")
    return join_tiers(load_table(str(out)), cloud, CloudTiming(300, 10)), cloud


@pytest.mark.local_models
def test_join_keeps_device_rows_as_measured_and_models_cloud_latency(joint):
    table, cloud = joint
    assert table.models[0] == DEVICE and table.models[1:] == cloud.models
    assert table.n_prompts == 3
    rows = [list(cloud.prompt_ids).index(p) for p in table.prompt_ids]
    assert np.array_equal(table.quality[:, 1:], cloud.quality[rows])
    assert np.all(table.latency_ms[:, 0] > 0)  # measured on the device
    expected = 300 + 10 * cloud.tokens_out[rows]
    assert np.allclose(table.latency_ms[:, 1:], expected)
    assert any("modelled" in n for n in table.notes)
    linked = over_link(table, cloud_models(table, (DEVICE,)), 250.0)
    assert np.allclose(linked.latency_ms[:, 1:] - table.latency_ms[:, 1:], 250.0)
    assert np.array_equal(linked.latency_ms[:, 0], table.latency_ms[:, 0])
    metered = over_link(table, cloud_models(table, (DEVICE,)), 0.0, usd_per_mb=2.0)
    extra = metered.cost_usd - table.cost_usd
    assert np.all(extra[:, 1:] > 0) and np.all(extra[:, 0] == 0)
    prompt_mb = np.array([len(p.encode()) for p in table.prompts]) / 1e6
    assert np.all(extra[:, 1:] >= 2.0 * prompt_mb[:, None] - 1e-12)


@pytest.mark.local_models
def test_outages_keep_the_device_answer_and_charge_what_was_spent(joint):
    table, _ = joint
    cloud = cloud_models(table, (DEVICE,))
    best = table.models[int(np.argmax(np.where(cloud, table.quality.mean(0), -1)))]
    cascade = ThresholdCascade([DEVICE, best], threshold=np.inf)  # always escalates
    trace = replay(cascade, table)
    up = served(trace, table, cloud, 0)
    down = served(trace, table, cloud, 0, Outages(1.0, detect_ms=1000))
    assert not up.degraded.any() and down.degraded.all()
    assert np.array_equal(down.quality, table.quality[:, 0])
    assert np.allclose(down.cost_usd, table.cost_usd[:, 0])
    assert np.allclose(down.latency_ms, table.latency_ms[:, 0] + 1000)
    cloud_only = replay(SingleModel(best), table)
    failed = served(cloud_only, table, cloud, None, Outages(1.0))
    assert (failed.quality == 0).all()
    device = served(cloud_only, table, cloud, 0, Outages(1.0))
    assert np.allclose(device.latency_ms, table.latency_ms[:, 0])
    half = served(trace, table, cloud, 0, Outages(0.5, seed=3))
    assert half.degraded.sum() == Outages(0.5, seed=3).down(3).sum()


@pytest.mark.local_models
def test_replayed_limits_stand_in_stop_or_refuse(joint):
    table, _ = joint
    backend = ReplayBackend(table)
    dear = table.models[int(np.nanargmax(np.nanmean(table.cost_usd, axis=0)))]
    policy = SingleModel(dear)
    free = run_policy(policy, backend, backend.queries())
    assert set(free.accepted_model) == {table.model_index(dear)} and not free.degraded
    cap = float(np.nanmean(table.cost_usd[:, table.model_index(dear)])) / 2
    capped = run_policy(policy, backend, backend.queries(), Limits(max_cost_usd=cap))
    assert table.model_index(dear) not in set(capped.accepted_model)
    assert len(capped.degraded) == 3
    assert (capped.total("cost_usd") <= cap + 1e-12).all()
    with pytest.raises(LimitError) as refused:
        run_policy(policy, backend, backend.queries(), Limits(max_latency_ms=1e-3))
    assert refused.value.limit == LATENCY
    # A cascade stops at its device answer when the next step does not fit: over a link
    # with a 60 s round trip, with the deadline the device's expected (mean) latency.
    far = over_link(table, cloud_models(table, (DEVICE,)), 60_000.0)
    backend = ReplayBackend(far)
    cascade = ThresholdCascade([DEVICE, dear], threshold=np.inf)
    stopped = run_policy(cascade, backend, backend.queries(),
                         Limits(max_latency_ms=float(far.latency_ms[:, 0].mean())))
    assert (stopped.accepted_model == 0).all() and (stopped.n_steps == 1).all()
    assert all(r.startswith("stopped") for r in stopped.degraded.values())
    assert COST != LATENCY
