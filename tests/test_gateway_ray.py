"""`triage serve --ray`: the gateway as a Ray Serve deployment on a real two-node Ray
cluster. Two replicas sharing Redis answer as the single process does and hold a key's
limits across replicas; an embedded model runs as its own deployment, and routers' query
embeddings are batched across requests by one embedder deployment."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from servers.processes import (
    free_port,
    postgres_server,
    ray_cluster,
    redis_server,
    write_config,
)

from llmtriage.serving.guard import key_hash

pytestmark = pytest.mark.slow

KEY = "tri-ray-key-limited"


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with ray_cluster(nodes=2) as address:
        yield address


@contextmanager
def served_on_ray(config: Path, address: str, replicas: int, log_path: Path) -> Iterator[str]:
    """``triage serve --ray`` in its own process group until the block ends; its URL."""
    port = free_port()
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmtriage.cli", "serve", "--config", str(config),
         "--ray", address, "--replicas", str(replicas), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log_path.read_text()
            assert time.time() < deadline, log_path.read_text()
            time.sleep(1)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=90)
        log.close()


def on_cluster(address: str, code: str) -> str:
    """Run ``code`` in a driver joined to the cluster (``ray`` and ``serve`` imported);
    what it prints."""
    done = subprocess.run([sys.executable, "-c", (
        "import ray, sys; from ray import serve; ray.init(address=sys.argv[1], "
        "logging_level='ERROR'); " + code), address],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_two_serve_replicas_answer_and_share_a_rate_limit(up, tmp_path, cluster):
    with redis_server(tmp_path) as state:
        config = write_config(tmp_path / "gateway.toml", up, {
            "ok": {"remote_name": "ok", "max_concurrency": 64}}, extra=f"""
[gateway]
request_log = ""
state_url = "{state}"

[[keys]]
name = "limited"
sha256 = "{key_hash(KEY)}"
requests_per_minute = 10

[[policies]]
name = "p"
kind = "single"
model = "ok"
""")
        with served_on_ray(config, cluster, 2, tmp_path / "serve.log") as url:

            def ask(_: int) -> httpx.Response:
                return httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
                    "model": "p", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer {KEY}"})

            with ThreadPoolExecutor(30) as pool:
                replies = list(pool.map(ask, range(30)))
            # Serve's proxy may answer a request 5xx while the replicas settle, or 404 from a
            # proxy that has not learnt the route yet (each seen in one clean-clone CI run);
            # a client retries that once, as any would.
            transient = [(r.status_code, r.text[:300]) for r in replies
                         if r.status_code not in (200, 429)]
            assert all(code >= 500 or (code == 404 and "Ping http" in text)
                       for code, text in transient), transient
            replies = [r if r.status_code in (200, 429) else ask(0) for r in replies]
            status = on_cluster(cluster, "print(serve.status().applications['triage']"
                                ".deployments['triage-gateway'].replica_states)")
    assert "'RUNNING': 2" in status, status
    codes = [r.status_code for r in replies]
    assert codes.count(200) == 10 and codes.count(429) == 20, (codes, transient)
    answered = [r.json() for r in replies if r.status_code == 200]
    assert all(a["triage"]["answered_by"] == "ok" for a in answered)


def knn_artifact(tmp_path: Path, models: tuple[str, str]) -> Path:
    """A kNN router over two models (MiniLM features), fitted on a small made-up table."""
    from llmtriage.data.loaders import load_table
    from llmtriage.policies.artifacts import save
    from llmtriage.policies.routers.knn import KNNRouter

    rng = np.random.default_rng(0)
    words = "river planet code python sum product capital city energy prime".split()
    prompts = [" ".join(rng.choice(words, 8)) + f" {i}?" for i in range(80)]
    rows = [{"prompt_id": f"p{i}", "prompt": prompt,
             "model": model, "quality": float(rng.random() < p), "cost_usd": cost}
            for i, prompt in enumerate(prompts) for model, p, cost in ((models[0], 0.5, 1e-7),
                                                                       (models[1], 0.8, 1e-5))]
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    router = KNNRouter(k=10).fit(load_table(f"long:{tmp_path / 'train.csv'}"))
    return save(router, tmp_path / "router.npz")


def test_embedded_model_and_embedder_are_their_own_deployments(up, tmp_path, cluster):
    artifact = knn_artifact(tmp_path, ("small", "ok"))
    config = write_config(tmp_path / "gateway.toml", up, {
        "ok": {"remote_name": "ok", "max_concurrency": 64}}, extra=f"""
[[models]]
name = "small"
backend = "llamacpp"
local = "smollm2-135m"
n_threads = 1

[gateway]
request_log = ""

[ray]
embed_batch = 32
embed_wait_ms = 20

[[policies]]
name = "r"
artifact = "{artifact}"
""")
    prompts = [f"question {i}: what is {i} times {i + 3}?" for i in range(24)]
    with served_on_ray(config, cluster, 1, tmp_path / "serve.log") as url:
        direct = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": "small", "max_tokens": 8,
            "messages": [{"role": "user", "content": "Name a colour."}]})

        def ask(prompt: str) -> httpx.Response:
            return httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
                "model": "r", "max_tokens": 4, "messages": [{"role": "user",
                                                              "content": prompt}]})

        with ThreadPoolExecutor(len(prompts)) as pool:
            routed = list(pool.map(ask, prompts))
        report = on_cluster(cluster, (
            "apps = serve.status().applications; "
            "print({n: {d: str(s.status.value) for d, s in a.deployments.items()} "
            "for n, a in apps.items()}); "
            "import json; print(json.dumps(serve.get_deployment_handle("
            "'triage-embedder', 'triage').counts.remote().result()))"))
    assert direct.status_code == 200, direct.text
    answer = direct.json()
    assert answer["triage"]["answered_by"] == "small"
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["usage"]["completion_tokens"] > 0
    assert [r.status_code for r in routed] == [200] * len(prompts), [r.text for r in routed]
    assert {r.json()["triage"]["answered_by"] for r in routed} <= {"small", "ok"}
    states, counts = report.strip().splitlines()[-2:]
    for deployment in ("triage-gateway", "triage-model-small", "triage-embedder"):
        assert f"'{deployment}': 'HEALTHY'" in states, states
    counts = json.loads(counts)
    # Every routed prompt was embedded by the shared deployment, in fewer batches than texts.
    assert counts["texts"] >= len(prompts), counts
    assert counts["batches"] < counts["texts"], counts


def test_a_serve_replica_killed_under_load_loses_no_acknowledged_request(up, tmp_path,
                                                                         cluster):
    """100 clients through Serve's proxy to two gateway replicas sharing one log; one
    replica's process is SIGKILLed: every client gets an HTTP answer (a 200 or an error
    status, never a dropped connection), every 200 is in the log, Serve brings the replica
    back, and the gateway serves on."""
    import psycopg

    with redis_server(tmp_path) as state, postgres_server() as log_db:
        config = write_config(tmp_path / "gateway.toml", up, {
            "ok": {"remote_name": "ok", "max_concurrency": 128}}, extra=f"""
[gateway]
database_url = "{log_db}"
state_url = "{state}"
""")
        with served_on_ray(config, cluster, 2, tmp_path / "serve.log") as url:
            replicas = subprocess.run(["pgrep", "-f", "ServeReplica:triage:triage-gateway"],
                                      capture_output=True, text=True).stdout.split()
            assert len(replicas) == 2, replicas
            statuses: list[int] = []
            acknowledged: list[str] = []
            dropped = 0

            async def load() -> None:
                nonlocal dropped
                async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(
                        max_connections=100)) as client:
                    async def worker(w: int) -> None:
                        nonlocal dropped
                        for i in range(6):
                            try:
                                r = await client.post(f"{url}/v1/chat/completions", json={
                                    "model": "ok", "messages": [
                                        {"role": "user", "content": f"load {w}.{i}"}]})
                            except httpx.HTTPError:
                                dropped += 1
                                continue
                            statuses.append(r.status_code)
                            if r.status_code == 200:
                                acknowledged.append(r.json()["id"])

                    async def killer() -> None:
                        await asyncio.sleep(1.0)
                        os.kill(int(replicas[0]), signal.SIGKILL)

                    await asyncio.gather(killer(), *(worker(w) for w in range(100)))

            asyncio.run(load())
            assert not Path(f"/proc/{replicas[0]}").exists()  # the replica did die
            deadline = time.time() + 120
            while True:  # Serve replaces the dead replica
                status = on_cluster(cluster, "print(serve.status().applications['triage']"
                                    ".deployments['triage-gateway'].replica_states)")
                if "'RUNNING': 2" in status or time.time() > deadline:
                    break
                time.sleep(2)
            after = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
                "model": "ok", "messages": [{"role": "user", "content": "after"}]})
        with psycopg.connect(log_db) as db:
            logged = {r[0] for r in db.execute("SELECT id FROM requests WHERE status = 200")}
    assert dropped == 0, f"{dropped} requests got no HTTP answer"
    assert len(statuses) == 600 and set(statuses) <= {200, 500, 502, 503}, set(statuses)
    assert statuses.count(200) >= 300, statuses.count(200)  # the survivor kept serving
    assert "'RUNNING': 2" in status, status
    assert after.status_code == 200, after.text
    assert not set(acknowledged) - logged
