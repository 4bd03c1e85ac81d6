"""Where the gateway's CPU goes on a passed-through request: measured, compared, profiled.

    python bench/gateway_profile.py [--requests 3000] [--rounds 4] [--concurrency 1,16]
                                    [--against REF] [--floor] [--no-profile]
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
- with ``--floor``: where the time goes by layer. The bare reverse proxy of
  ``bench/servers/bare_proxy.py`` (the same uvicorn, httptools, uvloop and aiohttp, nothing
  else) measured the same way, its rounds alternating with the gateway's: the stack's own
  cost at that number in flight. And the gateway's ASGI app alone, in this process with no
  sockets (requests handed to it directly; its model answers at once, in process): the
  CPU of Triage's own work, hot (the same code run back to back keeps the CPU's caches
  warm, which a lone request on a live server between network waits does not);
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
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import (  # noqa: E402
    CLIENT_KEY,
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


def bare_proxy(upstream: str, work: Path, core: set[int]) -> tuple[subprocess.Popen, str]:
    """The stack's floor: uvicorn + httptools + uvloop + aiohttp forwarding bytes."""
    port = free_port()
    proc = start([sys.executable, str(HERE / "servers" / "bare_proxy.py"), str(port),
                  upstream], f"http://127.0.0.1:{port}/v1/models", work / "bare.log")
    os.sched_setaffinity(proc.pid, core)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    asyncio.run(load(url, "fixed-a", 200, 4, "warm"))
    return proc, url


def app_in_process(requests: int) -> float:
    """CPU milliseconds per passed-through request of the gateway's ASGI app run in this
    process without sockets: the request is handed to the app, and its one model (an
    in-process stand-in) answers at once. Admission, the policy loop, accounting and the
    log row's commit all run as served."""
    import json

    from llmtriage.backends.live import ChatRequest, Completion, TokenLogprob
    from llmtriage.serving.app import build_gateway
    from llmtriage.serving.config import load_gateway_config

    class Answers:
        async def complete(self, model: str, request: ChatRequest) -> Completion:
            return Completion(model, "fixed", 12, 1, 1.0, 1e-6, None,
                              [TokenLogprob("fixed", -0.1, ())])

        async def aclose(self) -> None:
            return None

    work = Path(tempfile.mkdtemp(prefix="triage-app-"))
    (work / "triage.toml").write_text(gateway_config("http://127.0.0.1:9", work, ("fixed-a",)))
    config = load_gateway_config(work / "triage.toml")  # the benchmarked gateway's, as served
    app, _ = build_gateway(config, config.catalog(), backends={"openai": Answers()})
    body = json.dumps({"model": "fixed-a", "max_tokens": 8, "messages": [
        {"role": "user", "content": "in-process question: what is 3 plus 10?"}]}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {CLIENT_KEY}".encode()),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def one() -> None:
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        held = asyncio.Event()  # the client never goes away

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await held.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(dict(scope), receive, send)
        assert sent[0]["status"] == 200, sent

    async def run() -> float:
        async with app.app.router.lifespan_context(app.app):
            for _ in range(300):
                await one()
            started = time.process_time()
            for _ in range(requests):
                await one()
            return (time.process_time() - started) * 1000 / requests

    try:
        return uvloop.run(run())  # the server's loop
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
                  f"threads {max(0.0, statistics.median(ms) - loop):.2f}), "
                  f"{statistics.median(rates[name]):.0f} req/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", default="1,16", help="in flight, comma-separated")
    parser.add_argument("--against", metavar="REF", help="also run the code at this git ref")
    parser.add_argument("--floor", action="store_true",
                        help="also the bare proxy and the ASGI app in process (by layer)")
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
            if args.floor:
                gateways["bare proxy"] = bare_proxy(upstream, work, gateway_core)
            procs += [proc for proc, _ in gateways.values()]
            print(f"gateway on core {sorted(gateway_core)}, load and upstream on "
                  f"{sorted(load_cores)}; {args.requests} requests a round", flush=True)
            compare(gateways, [int(c) for c in args.concurrency.split(",")], args.requests,
                    args.rounds)
            if args.floor:
                hot = sorted(app_in_process(args.requests) for _ in range(args.rounds))
                print(f"  ASGI app in process (hot, no sockets): {statistics.median(hot):.2f} "
                      f"ms CPU per request (rounds {hot[0]:.2f}-{hot[-1]:.2f})", flush=True)
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
