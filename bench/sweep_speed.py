"""Speed of offline evaluation at scale.

A 100-point threshold sweep of a two-stage cascade over a table of 1,000,000 prompt-model
outcomes: RouteLLM's GSM8K table (GPT-4 vs Mixtral, real outcomes and costs) replicated to
500,000 prompts x 2 models. The cascade's confidence is a real recorded signal, the weak
model's answer length (shorter answers escalate less), negated so higher means surer.

Target: under 2 seconds for the whole sweep on the 2-core development machine.

    python bench/sweep_speed.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from llmtriage.data import load_table
from llmtriage.evaluation.evaluate import evaluate, sweep
from llmtriage.policies import ThresholdCascade


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--outcomes", type=int, default=1_000_000)
    ap.add_argument("--points", type=int, default=100)
    args = ap.parse_args()

    base = load_table(f"routellm:{args.data}/routellm", task="gsm8k")
    base = replace(base, confidence=np.asfortranarray(-base.tokens_out))
    times = -(-args.outcomes // (base.n_prompts * base.n_models))
    t0 = time.perf_counter()
    table = base.replicate(times)
    t_build = time.perf_counter() - t0
    outcomes = table.n_prompts * table.n_models
    weak, strong = base.models
    policy = ThresholdCascade([weak, strong]).fit(table)
    thresholds = np.quantile(table.confidence[:, 0], np.linspace(0, 1, args.points))

    evaluate(policy.with_params(threshold=float(thresholds[0])), table, bootstrap=0)  # warm-up
    t0 = time.perf_counter()
    points = sweep(policy, thresholds.tolist(), table)
    elapsed = time.perf_counter() - t0
    print(f"table: {table.n_prompts:,} prompts x {table.n_models} models = {outcomes:,} outcomes "
          f"(built in {t_build:.2f} s)")
    print(f"sweep: {len(points)} operating points of a two-stage cascade in {elapsed:.2f} s "
          f"({1000 * elapsed / len(points):.1f} ms per point); target < 2 s: "
          f"{'MET' if elapsed < 2 else 'MISSED'}")
    lo, hi = points[0], points[-1]
    print(f"curve ends: quality {lo.quality:.3f} at {lo.calls_per_query:.2f} calls/query, "
          f"{hi.quality:.3f} at {hi.calls_per_query:.2f} calls/query")

    # The same sweep where the million outcomes are spread over 11 models (RouterBench
    # ARC-Challenge, x63): fewer prompts, the cascade between its cheapest and best model.
    arc = load_table(f"routerbench:{args.data}/routerbench", task="arc-challenge")
    arc = replace(arc, confidence=np.asfortranarray(
        -np.vectorize(len, otypes=[float])(arc.responses)))
    wide = arc.replicate(-(-args.outcomes // (arc.n_prompts * arc.n_models)))
    cheap, best = "mistralai/mistral-7b-chat", "gpt-4-1106-preview"
    cascade = ThresholdCascade([cheap, best]).fit(wide)
    grid = np.quantile(wide.confidence[:, wide.model_index(cheap)],
                       np.linspace(0, 1, args.points)).tolist()
    t0 = time.perf_counter()
    points = sweep(cascade, grid, wide)
    elapsed = time.perf_counter() - t0
    print(f"11 models: {wide.n_prompts:,} prompts x {wide.n_models} = "
          f"{wide.n_prompts * wide.n_models:,} outcomes; {len(points)} points in "
          f"{elapsed:.2f} s; target < 2 s: {'MET' if elapsed < 2 else 'MISSED'}")


if __name__ == "__main__":
    main()
