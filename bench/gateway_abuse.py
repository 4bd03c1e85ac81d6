"""The gateway under abusive HTTP clients: what each attack makes it hold, and whether
everyone else is still served.

    python bench/gateway_abuse.py [--against REF] [--connections 100]

Starts the fixed-answer upstream and ``triage serve`` (keys, the request log on; the
configuration of ``bench/gateway_overhead.py``, with ``body_timeout_s = 3`` so the slow-body
attack meets the deadline within the run), then, one after another:

- **header flood**: each connection sends a request line, then 64 MiB of short headers;
- **pipelining flood**: each connection writes 4 MiB of pipelined ``GET /health`` requests
  and never reads an answer;
- **slow body**: 530 connections (more than ``max_connections``, 512) each send headers
  announcing a 1,000-byte body, then one byte every 4 s;
- **deep JSON**: 200 requests whose body nests 200,000 arrays.

After each it prints the gateway's resident memory (before, and the most seen while the
attack ran), and the latency of a ``/health`` request made by another client during the
attack (or "refused" when the gateway could not answer it within 5 s). With ``--against
REF`` the same runs for the code at a git ref (a worktree), for a side-by-side table.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import (  # noqa: E402
    CLIENT_KEY,
    HERE,
    free_port,
    gateway_config,
    rss_mib,
    start,
    worktree,
)


class Watch:
    """The gateway's peak RSS, sampled every 50 ms while an attack runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.done = pid, rss_mib(pid), False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done:
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.05)

    def stop(self) -> float:
        self.done = True
        self.thread.join()
        return self.peak


def health(base: str) -> str:
    """How long another client waits for /health now."""
    started = time.perf_counter()
    try:
        r = httpx.get(f"{base}/health", timeout=5)
    except httpx.HTTPError as exc:
        return f"refused ({type(exc).__name__})"
    return f"{(time.perf_counter() - started) * 1000:.0f} ms ({r.status_code})"


def header_flood(port: int, connections: int) -> None:
    for _ in range(connections):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            chunk, sent = b"".join(b"X-H%d: v\r\n" % k for k in range(5000)), 0
            try:
                while sent < 64 << 20:
                    s.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass


def pipelining_flood(port: int, connections: int) -> list[socket.socket]:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    payload = request * ((4 << 20) // len(request))
    held = []
    for _ in range(connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        sent, until = 0, time.monotonic() + 0.5
        while sent < len(payload) and time.monotonic() < until:
            try:
                sent += s.send(payload[sent:sent + (1 << 20)])
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                break
        held.append(s)
    return held


def slow_bodies(port: int, base: str) -> tuple[str, list[socket.socket]]:
    """530 bodies trickled a byte every 4 s for 12 s; /health after each round. The
    connections are returned open."""
    held = []
    for _ in range(530):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: "
                      b"application/json\r\ncontent-length: 1000\r\n\r\n{")
            held.append(s)
        except OSError:
            pass
    seen = []
    for _ in range(3):
        time.sleep(4)
        for s in held:
            try:
                s.send(b" ")
            except OSError:
                pass
        seen.append(health(base))
    return "/health after 4, 8, 12 s: " + ", ".join(seen), held


async def deep_json(url: str, n: int) -> dict[int, int]:
    body = b"[" * 200_000 + b"]" * 200_000
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=30) as client:
        codes: dict[int, int] = {}
        for _ in range(n):
            r = await client.post(url, content=body, headers=headers)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
    return codes


def attack(name: str, pid: int, base: str, run) -> None:  # noqa: ANN001
    """Run one attack, then ask /health while its connections are still open."""
    before = rss_mib(pid)
    watch = Watch(pid)
    result, held = run()
    during = health(base)
    peak = watch.stop()
    for s in held:
        s.close()
    print(f"  {name:<18} RSS {before:6.0f} -> peak {peak:6.0f} MiB; /health during it: "
          f"{during}" + (f"; {result}" if result else ""), flush=True)


def attacks(pid: int, port: int, connections: int) -> None:
    base = f"http://127.0.0.1:{port}"
    attack("header flood", pid, base, lambda: (header_flood(port, connections), []))
    attack("pipelining flood", pid, base,
           lambda: (None, pipelining_flood(port, connections)))
    attack("slow body", pid, base, lambda: slow_bodies(port, base))
    attack("deep JSON", pid, base, lambda: ("statuses " + str(asyncio.run(
        deep_json(f"{base}/v1/chat/completions", 200))), []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", metavar="REF", help="also run the code at this git ref")
    parser.add_argument("--connections", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="triage-abuse-"))
    procs = []
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        procs.append(start([sys.executable, str(HERE / "servers" / "fixed_upstream.py"),
                            str(up_port)], f"{upstream}/v1/models", work / "upstream.log"))
        with worktree(args.against, work / "against") as tree:
            trees = {"this tree": None} | ({args.against: tree / "src"} if tree else {})
            for label, src in trees.items():
                where = work / label.replace(" ", "-")
                where.mkdir()
                config = gateway_config(upstream, where, ("fixed-a",))
                # (code from before the body deadline would refuse the setting)
                deadline = "body_timeout_s = 3\n" if src is None else ""
                (where / "triage.toml").write_text(config + deadline)
                port = free_port()
                base = f"http://127.0.0.1:{port}"
                proc = start([sys.executable, "-m", "llmtriage.cli", "serve", "--port",
                              str(port), "--config", str(where / "triage.toml")],
                             f"{base}/health", where / "triage.log",
                             env={"PYTHONPATH": str(src)} if src else None)
                procs.append(proc)
                print(f"{label}:", flush=True)
                attacks(proc.pid, port, args.connections)
                proc.terminate()
                proc.wait(timeout=30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
