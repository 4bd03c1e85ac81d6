"""The response cache on a replayed probe stream: hits, false hits, time and cost saved.

    python bench/response_cache.py [--paraphrases 150] [--repeats 150]

The stream: the 307 built-in probes once each, plus ``--repeats`` of them asked again word
for word and ``--paraphrases`` of them reworded (a prefix, a suffix, lower case: the same
question, the same gold answer), shuffled (seed 0). The probes themselves are near
neighbours with different answers ("What is 8 + 2?", "What is 2 + 1?"; the capital of
France, of Germany), which is what a semantic cache must not confuse.

For each setting (exact only; semantic at cosine 0.98, 0.95 and 0.90) a fresh ``triage
serve`` answers the stream one request at a time with the device model (SmolLM2-135M in
process), the cache on. A hit is false when the answer it returns was made for a question
whose gold answer differs from this one's (the response names its source: ``triage.cache
.from``). Reported: hit rate, false hits (share of hits, and of requests), the mean and
p50 latency with the cache against the misses' (what every request would take without
it), and the device cost saved.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import free_port, start  # noqa: E402

from llmtriage.probes import load_probes  # noqa: E402
from llmtriage.probes.types import Probe  # noqa: E402

REWORDINGS = (lambda q: f"Quick question: {q}", lambda q: f"{q} Thanks!",
              lambda q: q.lower(), lambda q: f"Please tell me: {q}")
SETTINGS = (("exact only", None), ("semantic 0.98", 0.98), ("semantic 0.95", 0.95),
            ("semantic 0.90", 0.90))


def stream(repeats: int, paraphrases: int, seed: int = 0) -> list[tuple[str, Probe]]:
    rng = random.Random(seed)
    probes = load_probes()
    items = [(p.question, p) for p in probes]
    items += [(p.question, p) for p in rng.sample(probes, repeats)]
    items += [(rng.choice(REWORDINGS)(p.question), p) for p in rng.sample(probes, paraphrases)]
    rng.shuffle(items)
    return items


def config(work: Path, threshold: float | None) -> Path:
    path = work / "gateway.toml"
    semantic = "" if threshold is None else f"semantic = true\nthreshold = {threshold}\n"
    path.write_text(f"""
[[models]]
name = "device"
backend = "llamacpp"
local = "smollm2-135m"

[gateway]
request_log = "{work / 'requests.sqlite'}"
max_tokens = 16

[gateway.cache]
enabled = true
{semantic}""")
    return path


def replay(items: list[tuple[str, Probe]], threshold: float | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start([sys.executable, "-m", "llmtriage.cli", "serve", "--port", str(port),
                      "--config", str(config(work, threshold))], f"{url}/health",
                     work / "gateway.log")
        try:
            gold: dict[str, str] = {}
            rows = []
            with httpx.Client(timeout=120) as client:
                client.post(f"{url}/v1/chat/completions", json={
                    "model": "device", "messages": [{"role": "user", "content": "warm up"}]})
                for text, probe in items:
                    began = time.perf_counter()
                    r = client.post(f"{url}/v1/chat/completions", json={
                        "model": "device", "messages": [{"role": "user", "content": text}]})
                    took = (time.perf_counter() - began) * 1000
                    r.raise_for_status()
                    body = r.json()
                    gold[body["id"]] = probe.answer
                    cache = body["triage"].get("cache")
                    rows.append({"ms": took, "hit": cache is not None,
                                 "false": cache is not None
                                 and gold[cache["from"]] != probe.answer,
                                 "saved_usd": cache["saved_usd"] if cache else 0.0,
                                 "cost": body["triage"]["cost_usd"]})
        finally:
            proc.terminate()
            proc.wait(30)
    ms = np.array([r["ms"] for r in rows])
    hit = np.array([r["hit"] for r in rows])
    false = np.array([r["false"] for r in rows])
    spent = sum(r["cost"] for r in rows)
    saved = sum(r["saved_usd"] for r in rows)
    return {"requests": len(rows), "hit_rate": hit.mean(),
            "false_of_hits": false.sum() / max(hit.sum(), 1), "false_rate": false.mean(),
            "mean_ms": ms.mean(), "p50_ms": np.percentile(ms, 50),
            "miss_mean_ms": ms[~hit].mean(), "hit_mean_ms": ms[hit].mean() if hit.any()
            else float("nan"), "cost_saved": saved / (saved + spent) if saved + spent else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=150)
    parser.add_argument("--paraphrases", type=int, default=150)
    args = parser.parse_args()
    items = stream(args.repeats, args.paraphrases)
    console = Console(width=150)
    table = Table(title=f"Response cache on {len(items)} requests (307 probes, "
                        f"{args.repeats} repeats, {args.paraphrases} paraphrases), "
                        "answered by SmolLM2-135M on the device")
    for col in ("cache", "hit rate", "false hits (of hits)", "false hits (of requests)",
                "mean latency", "p50", "a miss (mean)", "a hit (mean)", "device cost saved"):
        table.add_column(col)
    for name, threshold in SETTINGS:
        r = replay(items, threshold)
        table.add_row(name, f"{r['hit_rate']:.1%}", f"{r['false_of_hits']:.1%}",
                      f"{r['false_rate']:.1%}", f"{r['mean_ms']:.0f} ms",
                      f"{r['p50_ms']:.0f} ms", f"{r['miss_mean_ms']:.0f} ms",
                      f"{r['hit_mean_ms']:.1f} ms", f"{r['cost_saved']:.0%}")
        console.print(f"{name}: done")
    console.print(table)


if __name__ == "__main__":
    main()
