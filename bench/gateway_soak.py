"""Soak: a gateway under steady hostile load for a long time; does its memory plateau?

    python bench/gateway_soak.py [--minutes 30] [--clients 24] [--max-requests 200000]

All on loopback: the fault-injecting upstream of the tests (tests/servers/upstream.py) and a
`triage serve` with keys, a bandit that learns from feedback, sticky sessions and the
request log. ``--clients`` clients keep this mix going (bounded by ``--minutes`` and
``--max-requests``):

- 30% a 760 KB prompt (four 190 KB messages) to the bandit, with a fresh 128-character
  session id;
- 20% a short prompt with a fresh session id (the session table fills and expires);
- 10% a 100 KB session header (refused);
- 15% a call to a model that answers after 1.5 s, abandoned by its client after 0.3 s;
- 10% a call to a model that trickles a byte every half second (its 3 s deadline ends it);
- 15% feedback on an earlier answer (several scores per answer).

Every minute it prints the gateway's RSS, its open file descriptors, the requests in flight
and waiting (from /health), the requests sent and their statuses. Pass: RSS plateaus (the
last third of the run grows less than 10% over the middle third) and in-flight returns to 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from gateway_isolation import upstream
from gateway_overhead import free_port, rss_mib, start

from llmtriage.serving.guard import key_hash

KEY = "tri-soak-" + "ab" * 16

CONFIG = """
[[models]]
name = "ok"
backend = "openai"
endpoint = "{up}/v1"
max_concurrency = 64

[[models]]
name = "backup"
backend = "openai"
endpoint = "{up}/v1"
remote_name = "ok"
max_concurrency = 64

[[models]]
name = "slow"
backend = "openai"
endpoint = "{up}/v1"
max_concurrency = 64

[[models]]
name = "trickle"
backend = "openai"
endpoint = "{up}/v1"
max_concurrency = 16
max_retries = 0
timeout_s = 3

[gateway]
request_log = "{work}/requests.sqlite"
session_ttl_s = 120

[[keys]]
name = "soak"
sha256 = "{digest}"

[[policies]]
name = "learner"
kind = "bandit"
table = "{work}/prior.csv"
models = ["ok", "backup"]

[[policies]]
name = "sticky"
kind = "single"
model = "ok"
"""


def prior(path: Path) -> None:
    rows = [{"prompt_id": f"p{i}", "prompt": f"Prior question {i} about topic {i % 9}",
             "model": model, "quality": float(i % 10 < cut), "cost_usd": 0.0}
            for i in range(60) for model, cut in (("ok", 8), ("backup", 6))]
    pd.DataFrame(rows).to_csv(path, index=False)


class Load:
    def __init__(self, base: str, max_requests: int) -> None:
        self.base = base
        self.left = max_requests
        self.sent = 0
        self.codes: dict[str, int] = {}
        self.answers: list[str] = []
        self.big = [{"role": "user", "content": "soak " * 38_000}] * 4  # 760 KB

    def count(self, code: str) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1

    async def one(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        kind = rng.random()
        url = f"{self.base}/v1/chat/completions"
        session = {"x-triage-session": f"{rng.getrandbits(512):0128x}"[:128]}
        label, timeout = "feedback", 60.0
        headers, body = {}, {}
        if kind < 0.30:
            label, headers, body = "big", session, {"model": "learner", "messages": self.big}
        elif kind < 0.50:
            label, headers = "session", session
        elif kind < 0.60:
            label, headers = "huge-header", {"x-triage-session": "s" * 100_000}
        elif kind < 0.75:
            label, timeout, body = "abandoned", 0.3, {"model": "slow"}
        elif kind < 0.85:
            label, body = "trickle", {"model": "trickle"}
        if label != "feedback":
            body = {"model": "sticky", "messages": [{"role": "user", "content": "hello"}],
                    **body}
        elif not self.answers:
            return
        else:
            url = f"{self.base}/v1/feedback"
            body = {"id": rng.choice(self.answers), "score": rng.random()}
        try:
            r = await client.post(url, headers=headers, json=body, timeout=timeout)
        except httpx.TimeoutException:
            self.count(f"{label} gave up")
            return
        except httpx.HTTPError as exc:
            self.count(f"{label} {type(exc).__name__}")
            return
        self.count(f"{label} {r.status_code}")
        if r.status_code == 200 and label == "big":
            self.answers.append(r.json()["id"])
            del self.answers[:-500]

    async def client(self, seed: int, until: float) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(timeout=60, headers={
                "authorization": f"Bearer {KEY}"}) as client:
            while time.monotonic() < until and self.left > 0:
                self.left -= 1
                self.sent += 1
                await self.one(client, rng)


async def monitor(base: str, pid: int, load: Load, until: float, samples: list) -> None:
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=30, headers={
            "authorization": f"Bearer {KEY}"}) as client:
        while True:
            await asyncio.sleep(min(60.0, max(0.0, until - time.monotonic())) or 60.0)
            health = (await client.get(f"{base}/health")).json()
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            sample = (time.monotonic() - start, rss_mib(pid), fds, health["in_flight"],
                      health["queued"], load.sent)
            samples.append(sample)
            print(f"{sample[0] / 60:5.1f} min  RSS {sample[1]:7.1f} MiB  fds {fds:4d}  "
                  f"in flight {sample[3]:3d}  queued {sample[4]:3d}  sent {load.sent:7d}  "
                  f"{dict(sorted(load.codes.items()))}", flush=True)
            if time.monotonic() >= until or load.left <= 0:
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--max-requests", type=int, default=200_000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="triage-soak-"))
    prior(work / "prior.csv")
    up_proc, up = upstream()
    config = work / "gateway.toml"
    config.write_text(CONFIG.format(up=up, work=work, digest=key_hash(KEY)))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gateway = start([sys.executable, "-m", "llmtriage.cli", "serve", "--config", str(config),
                     "--port", str(port)], f"{base}/health", work / "gateway.log")
    load, samples = Load(base, args.max_requests), []
    until = time.monotonic() + args.minutes * 60

    async def run() -> None:
        clients = [load.client(seed, until) for seed in range(args.clients)]
        await asyncio.gather(monitor(base, gateway.pid, load, until, samples), *clients)

    print(f"soak: {args.minutes:g} min, {args.clients} clients, gateway pid {gateway.pid}, "
          f"RSS at start {rss_mib(gateway.pid):.1f} MiB", flush=True)
    try:
        asyncio.run(run())
        time.sleep(5)  # abandoned and trickling calls end
        in_flight = httpx.get(f"{base}/health", headers={
            "authorization": f"Bearer {KEY}"}).json()["in_flight"]
    finally:
        gateway.terminate()
        gateway.wait(timeout=60)
        up_proc.terminate()
    rss = np.array([s[1] for s in samples])
    third = max(1, len(rss) // 3)
    middle, last = rss[third:2 * third].max(initial=rss[0]), rss[2 * third:].max(initial=0)
    growth = (last - middle) / middle
    log_bytes = (work / "gateway.log").stat().st_size
    print(f"RSS: peak of the middle third {middle:.1f} MiB, of the last third {last:.1f} MiB "
          f"({growth:+.1%}; target < +10%); in flight after the run: {in_flight}; "
          f"gateway log {log_bytes} bytes; {load.sent} requests")


if __name__ == "__main__":
    main()
