"""The gateway's overhead, side by side with a bare reverse proxy and the LiteLLM proxy.

    python bench/gateway_overhead.py [--requests 2000] [--concurrency 32] [--no-litellm]

All on loopback, against one fixed-answer upstream (bench/servers/fixed_upstream.py):

- direct: the client calls the upstream (the ceiling of this client on this machine);
- bare proxy: forwards bytes, nothing else (bench/servers/bare_proxy.py): the floor;
- Triage, a model passed through (request log on, as by default);
- Triage, a kNN router over two upstream models (a fresh prompt every request, so each
  decision embeds its query with MiniLM);
- Triage, a model passed through with its keys' limits in Redis (``state_url``; a
  redis-server on loopback, started by this script) instead of in memory;
- with ``--ray``: the same on Ray Serve (``triage serve --ray``, Redis state), with 1 and
  with 2 replicas, on a two-node Ray cluster on this machine (started by this script),
  passing through and routing with kNN (the embeddings batched by the shared embedder
  deployment);
- LiteLLM proxy (`litellm[proxy]`, installed by this script into bench/.litellm-venv, its own
  environment, not a dependency of Triage).

Each target gets 300 sequential requests (latency: p50 and p99, and the p50 added over
direct) and ``--requests`` with ``--concurrency`` in flight (throughput, and the
gateway's CPU milliseconds per request, from /proc; on Ray, of every Ray process: Serve's
proxy, the replicas and the cluster's own daemons). The client key has a rate limit and a
budget (both far from binding), so every request is admitted and settled. The gateways
(and the Ray cluster) are pinned to the first core, the upstream and the load generator to
the others, so a gateway's CPU is its own. Target: Triage's added latency below
LiteLLM's, and a passed-through request at most 1 ms of gateway CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import pandas as pd

from llmtriage.serving.guard import key_hash

HERE = Path(__file__).resolve().parent
LITELLM_VENV = HERE / ".litellm-venv"
LITELLM_PIN = "litellm[proxy]==1.108.7"
#: Both gateways check the client's key (LiteLLM refuses to start without a master key).
CLIENT_KEY = "sk-bench-" + "5e" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180,
               answered: Callable[[int], bool] = lambda status: status < 500,
               poll_s: float = 0.3) -> None:
    """Until ``url`` answers with a status ``answered`` accepts (by default any but a
    server error: some servers want a key for their health page), asked every ``poll_s``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            if answered(httpx.get(url, timeout=2).status_code):
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise RuntimeError(f"{url}: not ready after {timeout} s")


def start(command: list[str], ready: str, log: Path, env: dict | None = None,
          answered: Callable[[int], bool] = lambda status: status < 500,
          poll_s: float = 0.3) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    wait_ready(ready, proc, answered=answered, poll_s=poll_s)
    return proc


@contextmanager
def worktree(ref: str | None, where: Path) -> Iterator[Path | None]:
    """A detached git worktree of this repository at ``ref``, at ``where``, removed
    afterwards (None, and nothing made, without a ref): the code a bench compares against,
    run side by side with this tree's."""
    if ref is None:
        yield None
        return
    subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", "-q",
                    str(where), ref], check=True)
    try:
        yield where
    finally:
        subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force",
                        str(where)], check=False)


def rss_mib(pid: int) -> float:
    """A process's resident memory in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User plus system CPU time of a process so far, or of one of its threads (from
    /proc)."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ray_cpu_seconds() -> float:
    """CPU time so far of every Ray process on this machine (workers named ray::..., the
    raylets, the GCS, the Serve driver), this script excepted."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            if b"ray" in command:
                total += cpu_seconds(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return total


#: The gateways' core, and the upstream's and load generator's.
CORES = sorted(os.sched_getaffinity(0))
GATEWAY_CORES, LOAD_CORES = {CORES[0]}, set(CORES[1:]) or {CORES[0]}


def gateway_config(upstream: str, work: Path, models: tuple[str, ...]) -> str:
    """The benchmarked gateway: ``models`` passed through to the upstream's fixed answer, a
    keyed client whose rate limit and budget never bind, the request log on."""
    return "\n".join(
        f'[[models]]\nname = "{name}"\nbackend = "openai"\nendpoint = "{upstream}/v1"\n'
        f'remote_name = "fixed"\nmax_concurrency = 256\n' for name in models) + f"""
[[keys]]
name = "bench"
sha256 = "{key_hash(CLIENT_KEY)}"
requests_per_minute = 1e9
budget_usd = 1e9

[gateway]
request_log = "{work / 'requests.sqlite'}"
max_in_flight = 256
"""


def litellm_binary() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        print(f"installing {LITELLM_PIN} into {LITELLM_VENV} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_PIN],
                       check=True)
    return binary


def router_artifact(work: Path) -> Path:
    """A kNN router over the two upstream names, trained on 200 synthetic outcomes."""
    from llmtriage.data.loaders import load_table
    from llmtriage.policies.artifacts import save
    from llmtriage.policies.routers.knn import KNNRouter

    rng = np.random.default_rng(0)
    words = "river planet code python sum product capital city energy prime graph".split()
    rows = []
    for i in range(200):
        prompt = " ".join(rng.choice(words, size=10)) + f" #{i}?"
        for model, p in (("fixed-a", 0.5), ("fixed-b", 0.8)):
            rows.append({"prompt_id": f"p{i}", "prompt": prompt, "model": model,
                         "quality": float(rng.random() < p), "cost_usd": 1e-6 if
                         model == "fixed-a" else 1e-5})
    pd.DataFrame(rows).to_csv(work / "train.csv", index=False)
    router = KNNRouter(k=10, lam=0.0).fit(load_table(f"long:{work / 'train.csv'}"))
    return save(router, work / "router.npz")


async def load(url: str, model: str, n: int, concurrency: int, tag: str) -> dict:
    """``n`` requests, ``concurrency`` in flight, from an aiohttp client (a tenth of httpx's
    CPU per request, so that one core of load keeps a gateway busy)."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(n))

    async def worker(client: aiohttp.ClientSession) -> None:
        nonlocal failures
        for i in counter:
            body = {"model": model, "max_tokens": 8, "messages": [
                {"role": "user", "content": f"{tag} question {i}: what is {i} plus {i + 7}?"}]}
            t = time.perf_counter()
            async with client.post(url, json=body) as r:
                text = await r.text()
            latencies.append((time.perf_counter() - t) * 1000)
            if r.status != 200:
                failures += 1
                if failures == 1:
                    print(f"    {tag}: first failure {r.status}: {text[:300]}", flush=True)

    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=120),
            headers={"authorization": f"Bearer {CLIENT_KEY}"}) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    lat = np.array(latencies)
    return {"rps": n / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "failures": failures}


def ray_rows(work: Path, measure) -> list[dict]:  # noqa: ANN001
    """Triage on Ray Serve (Redis state) with 1, then 2 replicas, on a two-node cluster on
    this machine; one Serve application at a time (a cluster has one Serve proxy)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from servers.processes import ray_cluster

    rows = []
    os.sched_setaffinity(0, GATEWAY_CORES)  # the cluster's processes inherit the gateway core
    try:
        cluster = ray_cluster(nodes=2)
        address = cluster.__enter__()
    finally:
        os.sched_setaffinity(0, LOAD_CORES)
    try:
        for replicas in (1, 2):
            port = free_port()
            proc = start([sys.executable, "-m", "llmtriage.cli", "serve", "--config",
                          str(work / "redis.toml"), "--ray", address, "--replicas",
                          str(replicas), "--port", str(port)],
                         f"http://127.0.0.1:{port}/health", work / f"ray-{replicas}.log",
                         # Serve's proxy answers 404 until it routes to the gateway.
                         answered=lambda status: status == 200)
            os.sched_setaffinity(proc.pid, GATEWAY_CORES)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            try:
                for what, model in (("pass-through", "fixed-a"), ("kNN router", "router")):
                    rows.append(measure(f"Triage on Ray Serve, {replicas} replica(s), {what}",
                                        url, model, ray_cpu_seconds))
            finally:
                proc.terminate()
                proc.wait(timeout=120)
    finally:
        cluster.__exit__(None, None, None)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--ray", action="store_true", help="also Ray Serve, 1 and 2 replicas")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="triage-overhead-"))
    procs: list[subprocess.Popen] = []
    os.sched_setaffinity(0, LOAD_CORES)  # the upstream inherits it; gateways are moved
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        procs.append(start([sys.executable, str(HERE / "servers" / "fixed_upstream.py"),
                            str(up_port)], f"{upstream}/v1/models", work / "upstream.log"))
        targets = {"direct": (f"{upstream}/v1/chat/completions", "fixed")}

        bare = free_port()
        procs.append(start([sys.executable, str(HERE / "servers" / "bare_proxy.py"),
                            str(bare), upstream], f"http://127.0.0.1:{bare}/v1/models",
                           work / "bare.log"))
        targets["bare proxy"] = (f"http://127.0.0.1:{bare}/v1/chat/completions", "fixed")
        bare_pid = procs[-1].pid

        artifact = router_artifact(work)
        config = gateway_config(upstream, work, ("fixed-a", "fixed-b")) + f"""
[[policies]]
name = "router"
artifact = "{artifact}"
"""
        (work / "triage.toml").write_text(config)
        port = free_port()
        procs.append(start([sys.executable, "-m", "llmtriage.cli", "serve", "--port",
                            str(port), "--config", str(work / "triage.toml")],
                           f"http://127.0.0.1:{port}/health", work / "triage.log"))
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        targets["Triage pass-through"] = (url, "fixed-a")
        targets["Triage kNN router"] = (url, "router")
        pids = {"bare proxy": bare_pid, "Triage pass-through": procs[-1].pid,
                "Triage kNN router": procs[-1].pid}

        if not args.no_redis:
            rport = free_port()
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL))
            redis_pid = procs[-1].pid
            time.sleep(0.5)
            (work / "redis.toml").write_text(config.replace(
                "max_in_flight = 256", f'max_in_flight = 256\nstate_url = '
                f'"redis://127.0.0.1:{rport}/0"').replace("requests.sqlite",
                                                          "requests-redis.sqlite"))
            rgw = free_port()
            procs.append(start([sys.executable, "-m", "llmtriage.cli", "serve", "--port",
                                str(rgw), "--config", str(work / "redis.toml")],
                               f"http://127.0.0.1:{rgw}/health", work / "triage-redis.log"))
            targets["Triage pass-through, Redis state"] = (
                f"http://127.0.0.1:{rgw}/v1/chat/completions", "fixed-a")
            pids["Triage pass-through, Redis state"] = procs[-1].pid
            pids["redis-server"] = redis_pid
        if not args.no_litellm:
            (work / "litellm.yaml").write_text(f"""model_list:
  - model_name: fixed
    litellm_params:
      model: openai/fixed
      api_base: {upstream}/v1
      api_key: sk-upstream
litellm_settings:
  telemetry: false
general_settings:
  master_key: {CLIENT_KEY}
""")
            lport = free_port()
            procs.append(start([str(litellm_binary()), "--config", str(work / "litellm.yaml"),
                                "--port", str(lport), "--num_workers", "1"],
                               f"http://127.0.0.1:{lport}/health/liveliness",
                               work / "litellm.log",
                               env={"LITELLM_LOCAL_MODEL_COST_MAP": "True",
                                    "LITELLM_LOG": "ERROR"}))
            targets["LiteLLM proxy"] = (f"http://127.0.0.1:{lport}/v1/chat/completions",
                                        "fixed")
            pids["LiteLLM proxy"] = procs[-1].pid

        def measure(name: str, target: str, model: str, cpu_of: Callable[[], float] | None
                    ) -> dict:
            asyncio.run(load(target, model, 50, 4, f"warm-{name}"))  # warm-up
            seq = asyncio.run(load(target, model, args.sequential, 1, f"seq-{name}"))
            cpu = cpu_of() if cpu_of is not None else None
            par = asyncio.run(load(target, model, args.requests, args.concurrency,
                                   f"par-{name}"))
            cpu_ms = ((cpu_of() - cpu) * 1000 / args.requests
                      if cpu_of is not None and cpu is not None else float("nan"))
            print(f"  measured {name}", flush=True)
            return {"target": name, "p50_ms": seq["p50_ms"], "p99_ms": seq["p99_ms"],
                    "rps": par["rps"], "loaded_p50_ms": par["p50_ms"],
                    "loaded_p99_ms": par["p99_ms"], "cpu_ms_per_request": cpu_ms,
                    "failures": seq["failures"] + par["failures"]}

        for pid in pids.values():
            os.sched_setaffinity(pid, GATEWAY_CORES)
        def cpu_of(name: str) -> Callable[[], float] | None:
            if name not in pids:
                return None
            if name.endswith("Redis state"):  # the gateway's and Redis's CPU together
                return lambda: cpu_seconds(pids[name]) + cpu_seconds(pids["redis-server"])
            return functools.partial(cpu_seconds, pids[name])

        rows = [measure(name, target, model, cpu_of(name))
                for name, (target, model) in targets.items()]
        if args.ray and not args.no_redis:
            rows += ray_rows(work, measure)
        table = pd.DataFrame(rows).set_index("target")
        table.insert(2, "added_p50_ms", table["p50_ms"] - table.loc["direct", "p50_ms"])
        table.insert(3, "added_p99_ms", table["p99_ms"] - table.loc["direct", "p99_ms"])
        print(f"\none request at a time ({args.sequential}), then {args.requests} with "
              f"{args.concurrency} in flight:")
        print(table.round(2).to_string())
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
