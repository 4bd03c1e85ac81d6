"""Where the gateway's CPU goes on a passed-through request: measured, compared, profiled.

    python bench/gateway_profile.py [--requests 3000] [--rounds 4] [--concurrency 1,16]
                                    [--against REF] [--no-profile]
                                    [--profile-in-flight 16]

Starts the fixed-answer upstream and ``triage serve`` (one model passed through, a keyed
client with a rate limit and a budget, the request log on: the configuration of
``bench/gateway_overhead.py``'s pass-through row), pins the gateway to core 0 and this
script's load generator and the upstream to core 1, and reports:

- the gateway's CPU milliseconds per request (from /proc, user + system, every thread),
  per number of requests in flight, as the median and range over ``--rounds`` rounds, and
  how much of it the event loop's thread spent (the rest is the request-log writer's);
- with ``--against REF``: the same for the code at a git ref (a worktree of it, run by
  this interpreter), its rounds alternating with this tree's, so that both see the same
  machine (timings on a shared machine drift by a third from one minute to the next);
- unless ``--no-profile``: the share of the gateway's sampled CPU time by the library the
  innermost frame is in (own time), the busiest functions (own time), and the inclusive
  share of the gateway's own functions (the admission, the policy run, the upstream
  call, the log row, ...).

Needs py-spy for the profile (installed with Ray's ``serve`` extra, or ``pip install
py-spy``) and the permission to attach to a child process (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import statistics
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
    worktree,
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


def gateway(upstream: str, work: Path, src: Path | None, core: set[int]
            ) -> tuple[subprocess.Popen, str]:
    """A pass-through gateway pinned to ``core`` (of the code under ``src``, if given)."""
    work.mkdir()
    (work / "triage.toml").write_text(gateway_config(upstream, work, ("fixed-a",)))
    port = free_port()
    proc = start([sys.executable, "-m", "llmtriage.cli", "serve", "--port", str(port),
                  "--config", str(work / "triage.toml")],
                 f"http://127.0.0.1:{port}/health", work / "triage.log",
                 env={"PYTHONPATH": str(src)} if src else None)
    os.sched_setaffinity(proc.pid, core)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    asyncio.run(load(url, "fixed-a", 200, 4, "warm"))
    return proc, url


def compare(gateways: dict[str, tuple[subprocess.Popen, str]], concurrency: list[int],
            requests: int, rounds: int) -> None:
    """CPU per request of each gateway, rounds alternating between them."""
    for c in concurrency:
        spent: dict[str, list[float]] = {name: [] for name in gateways}
        looped: dict[str, list[float]] = {name: [] for name in gateways}
        rates: dict[str, list[float]] = {name: [] for name in gateways}
        for r in range(rounds):
            for name, (proc, url) in gateways.items():
                # The main thread runs the event loop; the others are the log writer.
                before, loop_before = cpu_seconds(proc.pid), cpu_seconds(proc.pid, proc.pid)
                result = asyncio.run(load(url, "fixed-a", requests, c, f"{name}-{r}"))
                spent[name].append((cpu_seconds(proc.pid) - before) * 1000 / requests)
                looped[name].append((cpu_seconds(proc.pid, proc.pid) - loop_before) * 1000
                                    / requests)
                rates[name].append(result["rps"])
                if result["failures"]:
                    print(f"  {name}: {result['failures']} failures", flush=True)
        for name in gateways:
            ms = sorted(spent[name])
            loop = statistics.median(looped[name])
            print(f"{name:>12}, {c:>2} in flight: {statistics.median(ms):.2f} ms CPU per "
                  f"request (rounds {ms[0]:.2f}-{ms[-1]:.2f}; event loop {loop:.2f}, other "
                  f"threads {statistics.median(ms) - loop:.2f}), "
                  f"{statistics.median(rates[name]):.0f} req/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", default="1,16", help="in flight, comma-separated")
    parser.add_argument("--against", metavar="REF", help="also run the code at this git ref")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-in-flight", type=int, default=16, metavar="N",
                        help="requests in flight while profiling")
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
        with worktree(args.against, work / "against") as tree:
            gateways = {"this tree": gateway(upstream, work / "this", None, gateway_core)}
            if tree is not None:
                gateways[args.against] = gateway(upstream, work / "old", tree / "src",
                                                 gateway_core)
            procs += [proc for proc, _ in gateways.values()]
            print(f"gateway on core {sorted(gateway_core)}, load and upstream on "
                  f"{sorted(load_cores)}; {args.requests} requests a round", flush=True)
            compare(gateways, [int(c) for c in args.concurrency.split(",")], args.requests,
                    args.rounds)
            if not args.no_profile:
                profile(spy, *gateways["this tree"], args.requests, args.profile_in_flight,
                        work / "stacks.txt")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def profile(spy: str, proc: subprocess.Popen, url: str, requests: int, in_flight: int,
            raw: Path) -> None:
    """py-spy's samples of the gateway under load (``in_flight`` requests at a time),
    summarised."""
    recorder = subprocess.Popen([spy, "record", "--pid", str(proc.pid), "--rate", "500",
                                 "--format", "raw", "--output", str(raw), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    asyncio.run(load(url, "fixed-a", requests, in_flight, "profile"))
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
    print(f"{total} busy samples at {in_flight} in flight; own time by library:")
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


if __name__ == "__main__":
    main()
