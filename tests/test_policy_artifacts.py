"""What was measured is what serves: `triage fit` saves a policy, `triage bench --policy-file`
replays that very file, and `triage serve` runs it, with the same decisions on the same
prompts. Routers on RouterBench's MBPP (11 models) here, served over a real upstream
process on loopback; cascades and cascade routing, whose decisions read live confidences,
are held against their replay on the local ladder in test_collect.py."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from servers.processes import gateway, upstream, write_config

from llmtriage.backends.replay import ReplayBackend
from llmtriage.data import load_table
from llmtriage.policies.artifacts import load
from llmtriage.policies.loop import run_policy

CLI = [sys.executable, "-m", "llmtriage.cli"]
#: Kinds whose decisions do not read an answer's confidence, with their fit parameters.
KINDS = {"single": ["model=gpt-4-1106-preview"], "random": [],
         "knn": ["embedder=hashing"], "logistic": ["embedder=hashing"],
         "mlp": ["embedder=hashing"], "mf": ["embedder=hashing"],
         "sw-ranking": ["embedder=hashing"], "bandit": ["embedder=hashing"]}
SERVED = 12  # test prompts sent through the gateway per policy


@pytest.fixture(scope="module")
def fitted(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("artifacts")
    source = f"routerbench:{data_dir / 'routerbench'}"
    paths = {}
    for kind, params in KINDS.items():
        out = tmp / f"{kind}.npz"
        run = subprocess.run([*CLI, "fit", source, "--task", "mbpp", "--policy", kind,
                              "--out", str(out), *(a for p in params for a in ("--param", p))],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, (kind, run.stderr)
        assert f"wrote {out}" in " ".join(run.stdout.split())
        paths[kind] = out
    table = load_table(source, task="mbpp")
    return tmp, source, table, paths


def replayed(path, table):
    """Per test prompt, the model the saved policy picks, replayed as bench replays it."""
    test = table.split("test")
    backend = ReplayBackend(test)
    trace = run_policy(load(path), backend, backend.queries())
    return test, np.array(test.models)[trace.accepted_model]


@pytest.mark.slow
def test_bench_replays_the_saved_policies(fitted):
    tmp, source, table, paths = fitted
    run = subprocess.run([*CLI, "bench", source, "--task", "mbpp", "-p", "oracle",
                          *(a for p in paths.values() for a in ("--policy-file", str(p))),
                          "--bootstrap", "0", "--json", str(tmp / "bench.json")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    records = json.loads((tmp / "bench.json").read_text())
    for kind, path in paths.items():
        test, picked = replayed(path, table)
        quality = test.quality[np.arange(test.n_prompts),
                               [test.model_index(m) for m in picked]].mean()
        # A saved policy is replayed as saved: at its own trade-off value, not re-swept.
        label = load(path).label
        saved = [r for r in records if r["family"] == kind and r["policy"] == label]
        assert saved, (kind, label)
        assert all(r["quality"] == pytest.approx(quality) for r in saved), kind
    # The single models are always there: the reference every metric needs.
    assert len({r["policy"] for r in records if r["family"] == "single"}) == table.n_models


@pytest.mark.slow
def test_serve_runs_the_saved_policies_with_the_replayed_decisions(fitted):
    tmp, _, table, paths = fitted
    with upstream() as url:
        models = {m: {"remote_name": "ok"} for m in table.models}
        extra = '[gateway]\nrequest_log = ""\nsticky_sessions = false\n' + "".join(
            f'\n[[policies]]\nname = "fitted-{kind}"\nartifact = "{path}"\n'
            for kind, path in paths.items())
        config = write_config(tmp / "gateway.toml", url, models, extra=extra)
        with gateway(config, tmp) as g:
            for kind, path in paths.items():
                test, picked = replayed(path, table)
                for i in range(SERVED):
                    r = httpx.post(f"{g.url}/v1/chat/completions", timeout=60, json={
                        "model": f"fitted-{kind}",
                        "messages": [{"role": "user", "content": str(test.prompts[i])}]})
                    assert r.status_code == 200, r.text
                    assert r.headers["x-triage-model"] == picked[i], (kind, i)


def test_bad_policy_files_get_one_clear_line(data_dir, tmp_path):
    source = f"routerbench:{data_dir / 'routerbench'}"
    fake = tmp_path / "fake.npz"
    fake.write_bytes(b"PK\x03\x04 not really a zip")
    run = subprocess.run([*CLI, "bench", source, "--task", "mbpp", "--policy-file", str(fake)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "not a Triage policy artifact" in run.stderr
    assert "Traceback" not in run.stderr
    oracle = subprocess.run([*CLI, "fit", source, "--task", "mbpp", "--policy", "oracle",
                             "--out", str(tmp_path / "o.npz")],
                            capture_output=True, text=True, timeout=300)
    assert oracle.returncode == 2 and "not a policy to save" in oracle.stderr
    assert not (tmp_path / "o.npz").exists()


def test_an_artifact_that_unpacks_past_the_bound_is_refused_before_reading(tmp_path,
                                                                           monkeypatch):
    """A zip bomb (3 MB that inflate to 3 GB) is refused from the zip directory's sizes."""
    from llmtriage.policies import artifacts

    path = tmp_path / "big.npz"
    np.savez_compressed(path, __header__=np.array("{}"), zeros=np.zeros(1 << 20))
    monkeypatch.setattr(artifacts, "MAX_UNPACKED_BYTES", 1 << 20)  # the file unpacks to 8 MiB
    with pytest.raises(artifacts.ArtifactError, match="refused: 2 arrays unpacking to 8 MiB"):
        load(path)
    monkeypatch.setattr(artifacts, "MAX_UNPACKED_BYTES", 1 << 30)
    with pytest.raises(artifacts.ArtifactError, match="unsupported artifact"):  # read, then
        load(path)
