"""`triage serve --ray`: the gateway as a Ray Serve deployment with two replicas on a real
two-node Ray cluster, sharing Redis: it answers as the single process does, and its keys'
limits hold across replicas."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from servers.processes import free_port, ray_cluster, redis_server, write_config

from llmtriage.serving.guard import key_hash

KEY = "tri-ray-key-limited"


def test_two_serve_replicas_answer_and_share_a_rate_limit(up, tmp_path):
    with redis_server(tmp_path) as state, ray_cluster(nodes=2) as address:
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
        port = free_port()
        log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmtriage.cli", "serve", "--config", str(config),
             "--ray", address, "--replicas", "2", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 180
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.time() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(1)

            def ask(_: int) -> httpx.Response:
                return httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
                    "model": "p", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer {KEY}"})

            with ThreadPoolExecutor(30) as pool:
                replies = list(pool.map(ask, range(30)))
            status = subprocess.run([sys.executable, "-c", (
                "import ray, sys; from ray import serve; ray.init(address=sys.argv[1], "
                "logging_level='ERROR'); d = serve.status().applications['triage']"
                ".deployments['triage-gateway']; print(d.replica_states)"), address],
                capture_output=True, text=True, timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
            log.close()
    assert "'RUNNING': 2" in status.stdout, status.stdout + status.stderr
    codes = [r.status_code for r in replies]
    assert codes.count(200) == 10 and codes.count(429) == 20, codes
    answered = [r.json() for r in replies if r.status_code == 200]
    assert all(a["triage"]["answered_by"] == "ok" for a in answered)
