"""Where the gateway's CPU goes on a passed-through request: py-spy samples it under load.

    python bench/gateway_profile.py [--requests 4000] [--concurrency 16] [--seconds 20]

Starts the fixed-answer upstream and ``triage serve`` (one model passed through, a keyed
client with a rate limit and a budget, the request log on: the configuration of
``bench/gateway_overhead.py``'s pass-through row), pins the gateway to core 0 and this
script's load generator and the upstream to core 1, and reports:

- the gateway's CPU milliseconds per request (from /proc, over the whole load);
- the share of its sampled CPU time by the library the innermost frame is in (own time),
  the busiest functions (own time), and the inclusive share of the gateway's own
  functions (the admission, the policy run, the upstream call, the log row, ...).

Needs py-spy (installed with Ray's ``serve`` extra, or ``pip install py-spy``) and the
permission to attach to a child process (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import (  # noqa: E402
    HERE,
    cpu_seconds,
    free_port,
    gateway_config,
    load,
    start,
)

#: Libraries a frame's file may belong to, most specific first.
LIBRARIES = ("llmtriage", "aiohttp", "uvloop", "httpx", "httpcore", "h11", "anyio",
             "uvicorn", "httptools", "starlette", "fastapi", "pydantic", "prometheus_client",
             "sqlite3", "json", "asyncio", "logging", "ssl", "socket", "selectors", "email",
             "uuid", "hashlib")


def library(frame: str) -> str:
    """The library of one collapsed-stack frame, 'fn (path/to/file.py:12)'."""
    path = frame.rsplit("(", 1)[-1]
    for name in LIBRARIES:
        if f"/{name}/" in path or f"/{name}.py" in path or path.startswith(f"{name}/"):
            return name
    return "other" if ".py" in path else "native"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cores = sorted(os.sched_getaffinity(0))
    gateway_core, load_cores = {cores[0]}, set(cores[1:]) or {cores[0]}

    work = Path(tempfile.mkdtemp(prefix="triage-profile-"))
    procs: list[subprocess.Popen] = []
    try:
        os.sched_setaffinity(0, load_cores)
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        procs.append(start([sys.executable, str(HERE / "servers" / "fixed_upstream.py"),
                            str(up_port)], f"{upstream}/v1/models", work / "upstream.log"))
        (work / "triage.toml").write_text(gateway_config(upstream, work, ("fixed-a",)))
        port = free_port()
        gateway = start([sys.executable, "-m", "llmtriage.cli", "serve", "--port", str(port),
                         "--config", str(work / "triage.toml")],
                        f"http://127.0.0.1:{port}/health", work / "triage.log")
        procs.append(gateway)
        os.sched_setaffinity(gateway.pid, gateway_core)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        asyncio.run(load(url, "fixed-a", 200, 4, "warm"))

        before = cpu_seconds(gateway.pid)
        result = asyncio.run(load(url, "fixed-a", args.requests, args.concurrency, "cpu"))
        cpu_ms = (cpu_seconds(gateway.pid) - before) * 1000 / args.requests

        raw = work / "stacks.txt"
        recorder = subprocess.Popen([spy, "record", "--pid", str(gateway.pid), "--rate",
                                     "500", "--format", "raw", "--output", str(raw),
                                     "--nonblocking"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        asyncio.run(load(url, "fixed-a", args.requests, args.concurrency, "profile"))
        recorder.send_signal(2)
        recorder.wait(timeout=60)

        own: collections.Counter[str] = collections.Counter()
        leaves: collections.Counter[str] = collections.Counter()
        threads: collections.Counter[str] = collections.Counter()
        stages: collections.Counter[str] = collections.Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
            if "select (selectors.py" in frames[-1] or "epoll" in frames[-1]:
                continue  # the idle event loop waiting on its sockets
            total += n
            own[library(frames[-1])] += n
            leaves[frames[-1]] += n
            threads[" > ".join(frames[:3])] += n
            for frame in {f for f in frames if library(f) == "llmtriage"}:
                stages[frame] += n
        print(f"gateway CPU per request (core {sorted(gateway_core)}, load on "
              f"{sorted(load_cores)}): {cpu_ms:.2f} ms at {args.concurrency} in flight, "
              f"{result['rps']:.0f} req/s, {result['failures']} failures")
        print(f"{total} busy samples; own time by library:")
        for name, n in own.most_common():
            print(f"  {name:<20} {100 * n / total:5.1f}%")
        print("by thread (its outermost frames):")
        for name, n in threads.most_common(6):
            print(f"  {100 * n / total:5.1f}%  {name}")
        print("own time, the 40 busiest functions:")
        for name, n in leaves.most_common(40):
            print(f"  {100 * n / total:5.1f}%  {name}")
        print("inclusive time, the gateway's 20 busiest functions (one may hold others):")
        for name, n in stages.most_common(20):
            print(f"  {100 * n / total:5.1f}%  {name}")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
