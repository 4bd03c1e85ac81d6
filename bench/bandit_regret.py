"""The LinUCB bandit replayed over a shuffled stream of training data: does it converge?

    python bench/bandit_regret.py [--data ../shared/data]

Stream: LLMRouter's 5,608 training prompts (9 models, graded quality), shuffled; the bandit
sees each prompt, calls one model, and learns from that model's recorded quality only. Its
prior is the per-model mean quality on 100 held-back prompts. Regret is measured against the
best fixed single model in hindsight and against an offline logistic router trained on the
whole stream with full information; printed every 500 steps.
"""

from __future__ import annotations

import argparse

import numpy as np

from llmtriage.data import load_table
from llmtriage.policies.routers import ClassifierRouter, LinUCBRouter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    table = load_table(f"llmrouter:{args.data}/llmrouter").split("train")
    order = np.random.default_rng(args.seed).permutation(table.n_prompts)
    prior, stream = table.take(order[:100]), table.take(order[100:])
    bandit = LinUCBRouter().fit(prior)
    x = bandit.context(stream.prompts)
    q = stream.quality
    rewards = np.empty(stream.n_prompts)
    for t in range(stream.n_prompts):
        m = int(bandit.choose(x[t : t + 1])[0])
        rewards[t] = q[t, m]
        bandit.observe(x[t], m, rewards[t])
    best_single = q.mean(axis=0).argmax()
    offline = ClassifierRouter(c=1.0).fit(stream, embedder=bandit.embedder_)
    offline_pick = offline.predict_quality(stream.prompts).argmax(axis=1)
    offline_rewards = q[np.arange(stream.n_prompts), offline_pick]
    fixed = q[:, best_single]
    print(f"stream {stream.n_prompts} prompts x {stream.n_models} models; best fixed model "
          f"{stream.models[best_single]} ({fixed.mean():.3f}); offline router "
          f"(full information, in-sample) {offline_rewards.mean():.3f}")
    print(f"{'steps':>6} {'bandit mean reward':>19} {'last-500 reward':>16} "
          f"{'regret vs best model':>21} {'regret vs offline router':>25}")
    for t in range(500, stream.n_prompts + 1, 500):
        window = slice(t - 500, t)
        print(f"{t:6d} {rewards[:t].mean():19.3f} {rewards[window].mean():16.3f} "
              f"{(fixed[:t] - rewards[:t]).sum():21.1f} "
              f"{(offline_rewards[:t] - rewards[:t]).sum():25.1f}")
    print(f"calls per model: {dict(zip(stream.models, bandit.pulls_.tolist(), strict=True))}")
    print("defaults (alpha 0.1, ridge 10, 24 dims); "
          "other orders of the stream:")
    for seed in (1, 2, 3):
        order = np.random.default_rng(seed).permutation(table.n_prompts)
        prior, stream = table.take(order[:100]), table.take(order[100:])
        bandit = LinUCBRouter().fit(prior, embedder=bandit.embedder_)
        x, q = bandit.context(stream.prompts), stream.quality
        got = np.empty(len(x))
        for t in range(len(x)):
            m = int(bandit.choose(x[t : t + 1])[0])
            got[t] = q[t, m]
            bandit.observe(x[t], m, got[t])
        fixed = q[:, q.mean(axis=0).argmax()]
        print(f"  seed {seed}: bandit {got.mean():.3f} (last 2,000: {got[-2000:].mean():.3f}) vs "
              f"best fixed model {fixed.mean():.3f} (last 2,000: {fixed[-2000:].mean():.3f}); "
              f"final regret {(fixed - got).sum():.1f}")


if __name__ == "__main__":
    main()
