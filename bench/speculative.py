"""Token-level hierarchy on two cores: does speculative decoding pay for the local 1.5B?

    python bench/speculative.py [--prompts 6] [--max-tokens 128]

The 1.5B Qwen coder answers code prompts greedily (temperature 0), alone and with
llama.cpp's speculative decoding (xllamacpp, in process):

- a draft model: the 0.5B Qwen coder (same tokenizer) proposing up to N tokens
  (N = 2, 4, 8), with the draft on 1 thread or on both;
- n-gram drafting (no second model): tokens proposed from n-grams of the prompt and the
  answer so far (``ngram-simple``, ``ngram-mod``).

Per setting: decode tokens per second (llama.cpp's own timing, prompt excluded), the
end-to-end time, drafted tokens accepted (where reported), the process CPU seconds per
output token (energy: x the catalog's watts per core), and the share of answers identical
to the 1.5B's alone. Each setting loads its own server; the first prompt is a warm-up.
"""

from __future__ import annotations

import argparse
import resource
import time

import xllamacpp
from rich.console import Console
from rich.table import Table

from llmtriage.backends.catalog import WATTS_PER_CORE
from llmtriage.backends.zoo import ensure, local_model

PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function that checks whether a string is a palindrome, ignoring case "
    "and non-letters.",
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Write a Python class Stack with push, pop and peek methods.",
    "Write a Python function that counts the words in a text and returns the 3 most common.",
    "Write a Python function that flattens a nested list of any depth.",
    "Write a Python function that parses 'key=value' pairs separated by ';' into a dict.",
]
SPEC = xllamacpp.common_speculative_type


def server(draft: str | None = None, kind: str = "none", n_max: int = 4,
           draft_threads: int = 2) -> xllamacpp.Server:
    params = xllamacpp.CommonParams()
    params.model.path = str(ensure(local_model("qwen2.5-coder-1.5b")))
    params.n_ctx = 2048
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.warmup = False
    params.verbosity = -1
    spec = params.speculative
    if kind == "draft":
        assert draft is not None
        spec.types = [SPEC.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
        spec.draft.mparams.path = str(ensure(local_model(draft)))
        spec.draft.n_max = n_max
        spec.draft.cpuparams.n_threads = draft_threads
        spec.draft.cpuparams_batch.n_threads = draft_threads
    elif kind == "ngram-simple":
        spec.types = [SPEC.COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE]
    elif kind == "ngram-mod":
        spec.types = [SPEC.COMMON_SPECULATIVE_TYPE_NGRAM_MOD]
    return xllamacpp.Server(params)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(srv: xllamacpp.Server, prompts: list[str], max_tokens: int) -> dict:
    texts, decode, accepted, drafted, tokens = [], [], 0, 0, 0
    srv.handle_chat_completions({"messages": [{"role": "user", "content": "hi"}],
                                 "max_tokens": 4, "temperature": 0})
    wall, cpu = time.perf_counter(), cpu_s()
    for prompt in prompts:
        data = srv.handle_chat_completions({
            "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "seed": 0})
        texts.append(data["choices"][0]["message"]["content"])
        t = data.get("timings") or {}
        decode.append(t.get("predicted_per_second", 0.0))
        tokens += int(t.get("predicted_n", 0))
        drafted += int(t.get("draft_n", 0))
        accepted += int(t.get("draft_n_accepted", 0))
    return {"texts": texts, "decode_tps": sum(decode) / len(decode),
            "wall_s": time.perf_counter() - wall, "cpu_s": cpu_s() - cpu, "tokens": tokens,
            "accepted": accepted / drafted if drafted else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    prompts = PROMPTS[: args.prompts]
    settings = [("1.5B alone", {}),
                *[(f"draft 0.5B, N={n}, draft on {t} thread{'s' * (t > 1)}",
                   {"draft": "qwen2.5-coder-0.5b", "kind": "draft", "n_max": n,
                    "draft_threads": t}) for n, t in ((2, 2), (4, 2), (8, 2), (4, 1))],
                ("n-gram (simple)", {"kind": "ngram-simple"}),
                ("n-gram (mod)", {"kind": "ngram-mod"})]
    console = Console(width=150)
    table = Table(title=f"Qwen2.5-Coder-1.5B, {len(prompts)} code prompts, greedy, up to "
                        f"{args.max_tokens} tokens, 2 cores")
    for col in ("setting", "decode tok/s", "end-to-end s", "vs alone", "drafts accepted",
                "CPU s / token", "J / token", "identical answers"):
        table.add_column(col)
    base = None
    for name, kwargs in settings:
        srv = server(**kwargs)
        result = run(srv, prompts, args.max_tokens)
        del srv
        if base is None:
            base = result
        same = sum(a == b for a, b in zip(result["texts"], base["texts"], strict=True))
        per_token = result["cpu_s"] / max(result["tokens"], 1)
        table.add_row(name, f"{result['decode_tps']:.1f}", f"{result['wall_s']:.1f}",
                      f"{base['wall_s'] / result['wall_s']:.2f}x",
                      "-" if result["accepted"] is None else f"{result['accepted']:.0%}",
                      f"{per_token:.3f}", f"{per_token * WATTS_PER_CORE:.2f}",
                      f"{same}/{len(prompts)}")
        console.print(f"{name}: {result['wall_s']:.1f} s")
    console.print(table)


if __name__ == "__main__":
    main()
