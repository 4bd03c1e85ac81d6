"""`triage collect --ray` on a real two-node Ray cluster writes the local run's table."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from servers.processes import ray_cluster

# Runs an embedded local model: `pytest -m 'not local_models'` skips it.
pytestmark = pytest.mark.local_models

SAMPLE = 6


def collect(out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmtriage.cli", "collect", "--sample",
                           str(SAMPLE), "--models", "smollm2-135m", "--out", str(out),
                           *extra], capture_output=True, text=True, timeout=600)


def test_a_cluster_run_writes_the_same_table_as_a_local_one(tmp_path):
    local = collect(tmp_path / "local.csv")
    assert local.returncode == 0, local.stderr
    with ray_cluster(nodes=2) as address:
        spread = collect(tmp_path / "ray.csv", "--ray", address)
    assert spread.returncode == 0, spread.stderr
    assert "on 2 Ray nodes" in spread.stderr
    per_node = spread.stdout.split("calls per Ray node:")[1].split()
    assert per_node == ["3", "+", "3"]  # the work went to both nodes
    columns = ["prompt_id", "model", "split", "quality", "response", "tokens_out"]
    a = pd.read_csv(tmp_path / "local.csv")[columns]
    b = pd.read_csv(tmp_path / "ray.csv")[columns]
    assert len(a) == SAMPLE
    pd.testing.assert_frame_equal(a, b)  # same rows, same answers, same grades
