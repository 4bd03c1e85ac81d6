"""The embedded local models on this machine: load time, prompt and decode speed, memory.

    python bench/local_models.py

Loads each model (weights verified by sha256 first, not counted in the load time), asks it
for a 64-token answer three times, and reports llama.cpp's own prompt and decode rates; then
the resident memory of the process with all three models loaded together.
"""

from __future__ import annotations

import resource
import statistics
import time

from llmtriage.backends.catalog import default_catalog
from llmtriage.backends.live import ChatRequest
from llmtriage.backends.llamacpp import LlamaCppBackend, model_path

PROMPT = "Write a short paragraph about the history of the bicycle."


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    catalog = default_catalog()
    backend = LlamaCppBackend(catalog)
    base = rss_mb()
    print(f"process RSS before loading: {base:.0f} MB")
    print(f"{'model':<20} {'load s':>7} {'prompt tok/s':>13} {'decode tok/s':>13} "
          f"{'RSS after MB':>13}")
    for name in catalog.names():
        model_path(catalog.spec(name))  # verify (and assemble) outside the timed load
        t0 = time.perf_counter()
        backend.load(name)
        load_s = time.perf_counter() - t0
        prompt_rates, decode_rates = [], []
        for _ in range(3):
            c = backend.complete_sync(name, ChatRequest.ask(PROMPT, max_tokens=64,
                                                            logprobs=False))
            timings = c.extra["timings"]
            prompt_rates.append(timings["prompt_per_second"])
            decode_rates.append(timings["predicted_per_second"])
        print(f"{name:<20} {load_s:7.2f} {statistics.median(prompt_rates):13.1f} "
              f"{statistics.median(decode_rates):13.1f} {rss_mb():13.0f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"all three loaded together: RSS {rss_mb():.0f} MB "
          f"({rss_mb() - base:.0f} MB for the models), peak {peak:.0f} MB")


if __name__ == "__main__":
    main()
