"""The trace is the one record of what happened: under fallback it names the model that
answered, and everything downstream (the response, its headers, the request log, `ask`, the
calibrator a cascade applies) reads it from there. And an upstream's 429 reaches the client
as a 429 with its Retry-After. Real gateway and upstream processes on loopback."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import httpx
import numpy as np
import pandas as pd
import pytest
from servers.processes import gateway, upstream, write_config

ASK = [sys.executable, "-m", "llmtriage.cli", "ask"]


def calibration_table(path):
    """Recorded outcomes on which the two models' confidences mean opposite things: a high
    mean logprob is right for "backup" and wrong for "primary"."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        for model, sign in (("primary", -1), ("backup", 1)):
            conf = float(rng.uniform(-3.0, 0.0))
            rows.append({"prompt_id": f"q{i}", "prompt": f"question {i}", "model": model,
                         "quality": float(sign * (conf + 1.0) > 0), "confidence": conf,
                         "cost_usd": 1e-6})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("traces")
    calibration_table(tmp / "recorded.csv")
    with upstream() as url:
        config = write_config(tmp / "gateway.toml", url, {
            "primary": {"remote_name": "always-500", "max_retries": 0},
            "backup": {"remote_name": "ok"},
            "limited": {"remote_name": "always-429", "max_retries": 0},
            "limited-too": {"remote_name": "always-429", "max_retries": 0},
        }, extra="""
[gateway]
request_log = "requests.sqlite"
breaker_failures = 1000

[[policies]]
name = "calibrated"
kind = "calibrated-cascade"
table = "recorded.csv"
models = ["primary", "backup"]
threshold = 0.8

[[policies]]
name = "quota"
kind = "threshold-cascade"
models = ["limited", "limited-too"]
""")
        yield tmp, config


def chat(url: str, model: str, content: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": model, "messages": [{"role": "user", "content": content}]})


def test_fallback_is_recorded_as_the_model_that_answered(setup):
    tmp, config = setup
    with gateway(config, tmp) as g:
        r = chat(g.url, "calibrated", "ping?")
        assert r.status_code == 200, r.text
        info = r.json()["triage"]
        # "primary" failed; "backup" answered in its place. The step is backup's, so the
        # cascade judged it with backup's calibrator (which trusts a confident answer) and
        # stopped; with primary's calibrator it would have escalated to a second call.
        assert [s["model"] for s in info["steps"]] == ["backup"]
        assert info["steps"][0]["fallback_from"] == "primary"
        assert info["answered_by"] == "backup" == r.headers["x-triage-model"]
        assert r.json()["model"] == "backup"
        assert r.headers["x-triage-models-called"] == "backup"
        ident = r.json()["id"]
        g.stop()  # SIGTERM: it finishes, flushes and closes the request log
    row = sqlite3.connect(tmp / "requests.sqlite").execute(
        "SELECT answered_by, steps FROM requests WHERE id = ?", (ident,)).fetchone()
    assert row[0] == "backup"
    assert [s["model"] for s in json.loads(row[1])] == ["backup"]


def test_ask_names_the_model_that_answered(setup):
    tmp, config = setup
    run = subprocess.run([*ASK, "--config", str(config), "--policy", "calibrated", "ping?"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    table = run.stdout.split("answer (", 1)[0]
    assert "backup (for primary)" in " ".join(table.split())
    assert "answer (backup)" in run.stdout


@pytest.mark.slow
def test_an_upstream_429_reaches_the_client_as_429_with_retry_after(setup):
    tmp, config = setup
    with gateway(config, tmp) as g:
        # A model named directly has no fallback: its 429 is the client's.
        r = chat(g.url, "limited", "ping?")
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "7"
        assert r.json()["error"]["code"] == "upstream_rate_limited"
        # Through a policy, the pool falls back past both rate-limited models (and the
        # failing one) to "backup": the client never sees the 429s.
        r = chat(g.url, "quota", "pong?")
        assert r.status_code == 200, r.text
        assert r.json()["triage"]["answered_by"] == "backup"
        assert r.json()["triage"]["steps"][0]["fallback_from"] == "limited"
