"""Routers on RouteLLM's data (GPT-4-1106 vs Mixtral-8x7B), beside RouteLLM's published figures.

    python bench/routers_routellm.py [--data ../shared/data] [--folds 5]

Two setups, both different from RouteLLM's (which trains on Chatbot Arena preferences plus
augmentation and tests on these benchmarks): (1) k-fold *within* each benchmark, every
prompt scored by a router that never saw it; (2) trained on one benchmark, tested on another.
For each: APGR, CPT(50%), CPT(80%), the share of GPT-4 calls needed for 95% of GPT-4's
quality and the resulting cost saving against GPT-4 alone (prices $24.7 / $0.24 per million
tokens, RouteLLM's). The router's decision is the lam rule: call GPT-4 when its predicted
quality gain exceeds lam times its extra cost; sweeping lam traces the curve.
"""

from __future__ import annotations

import argparse

import numpy as np

from llmtriage import metrics
from llmtriage.data import load_table
from llmtriage.data.loaders.routellm import STRONG, WEAK
from llmtriage.data.splits import kfold, same_text
from llmtriage.policies.routers import ClassifierRouter, EloRouter, KNNRouter, MFRouter

PUBLISHED = {  # arXiv 2406.18665 v4, best router per benchmark; launch blog cost savings
    "mt-bench": {"apgr": 0.802, "cpt50": 0.1340, "cpt80": 0.3131, "saving95": 0.85},
    "mmlu": {"apgr": 0.603, "cpt50": 0.3540, "cpt80": 0.7155, "saving95": 0.45},
    "gsm8k": {"apgr": 0.622, "cpt50": 0.3364, "cpt80": 0.6326, "saving95": 0.35},
}


#: Commercial routers judged on MT-Bench (benchmarks_mt-bench/), and RouteLLM's GPT-4 share
#: needed to match each.
COMMERCIAL = (("Unify", 8.757862, "25.4%"), ("Martian", 8.3125, "29.7%"))


def curve(gain: np.ndarray, q: np.ndarray, cost: np.ndarray):
    """Strong-call share, quality and cost when calling GPT-4 on the top-gain queries."""
    order = np.argsort(-gain, kind="stable")
    n = len(gain)
    shares, quality, spend = [], [], []
    for k in np.unique(np.linspace(0, n, 101).round().astype(int)):
        strong = np.zeros(n, dtype=bool)
        strong[order[:k]] = True
        shares.append(k / n)
        quality.append(np.where(strong, q[:, 1], q[:, 0]).mean())
        spend.append(np.where(strong, cost[:, 1], cost[:, 0]).mean())
    return np.array(shares), np.array(quality), np.array(spend)


def report(name: str, gain: np.ndarray, q: np.ndarray, cost: np.ndarray) -> dict:
    share, quality, spend = curve(gain, q, cost)
    weak, strong = q[:, 0].mean(), q[:, 1].mean()
    reach = np.flatnonzero(quality >= 0.95 * strong)
    s95 = share[reach[0]] if reach.size else float("nan")
    saving = 1 - spend[reach[0]] / cost[:, 1].mean() if reach.size else float("nan")
    return {"apgr": metrics.apgr(share, quality, weak, strong),
            "cpt50": metrics.cpt(share, quality, weak, strong, 0.5),
            "cpt80": metrics.cpt(share, quality, weak, strong, 0.8),
            "share95": s95, "saving95": saving}


def fit_predict(router, train, test) -> np.ndarray:
    router.fit(train)
    predicted = router.predict_quality(test.prompts)
    return predicted[:, 1] - predicted[:, 0]  # the models are (Mixtral, GPT-4)


def kfold_gain(make, table, folds: int, seed: int) -> np.ndarray:  # noqa: ANN001
    """Every prompt's predicted GPT-4 gain from a router that never saw it (nor its text:
    a question asked twice, as MMLU's 105 are, is held out in its first copy's fold)."""
    gain = np.empty(table.n_prompts)
    for kept, held in kfold(table.n_prompts, folds, seed, groups=same_text(table.prompts)):
        gain[held] = fit_predict(make(), table.take(kept), table.take(held))
    return gain


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    full = load_table(f"routellm:{args.data}/routellm")
    assert full.models == (WEAK, STRONG)
    tasks = ("mt-bench", "mmlu", "gsm8k")
    header = (f"{'setup':<28} {'router':<9} {'APGR':>6} {'CPT50':>7} {'CPT80':>7} "
              f"{'GPT-4 % @95%':>13} {'saving @95%':>12}")
    print(header)
    for task in tasks:
        table = full.filter_task(task)
        pub = PUBLISHED[task]
        print(f"{task + ' (RouteLLM published)':<28} {'best':<9} {pub['apgr']:6.3f} "
              f"{pub['cpt50']:7.1%} {pub['cpt80']:7.1%} {'':>13} {pub['saving95']:12.0%}")
        for make in (KNNRouter, ClassifierRouter, MFRouter, EloRouter):
            gain = kfold_gain(make, table, args.folds, seed=0)
            r = report(task, gain, table.quality, table.cost_usd)
            print(f"{task + f' ({args.folds}-fold)':<28} {make().curve_name:<9} "
                  f"{r['apgr']:6.3f} {r['cpt50']:7.1%} {r['cpt80']:7.1%} "
                  f"{r['share95']:13.1%} {r['saving95']:12.0%}")
            if task == "mt-bench":
                share, quality, _ = curve(gain, table.quality, table.cost_usd)
                for rival, score, theirs in COMMERCIAL:
                    hit = np.flatnonzero(10 * quality >= score)
                    need = f"{share[hit[0]]:.1%}" if hit.size else "never"
                    print(f"{'':<28} {'':<9} matches {rival} ({score:.3f}) with {need} GPT-4 "
                          f"calls (RouteLLM: {theirs})")
        if task == "mt-bench":  # 72 prompts: how much the figure moves with the folds alone
            spread = [report(task, kfold_gain(KNNRouter, table, args.folds, seed),
                             table.quality, table.cost_usd)["apgr"] for seed in range(1, 6)]
            print(f"{'':<28} knn APGR over 5 other fold assignments: mean {np.mean(spread):.3f}, "
                  f"range {min(spread):.3f}-{max(spread):.3f}")
    for train_task, test_task in (("mmlu", "gsm8k"), ("gsm8k", "mmlu"), ("mmlu", "mt-bench"),
                                  ("gsm8k", "mt-bench")):
        train, test = full.filter_task(train_task), full.filter_task(test_task)
        for router in (KNNRouter(), ClassifierRouter(), MFRouter(), EloRouter()):
            r = report(test_task, fit_predict(router, train, test), test.quality, test.cost_usd)
            print(f"{train_task + ' -> ' + test_task:<28} {router.curve_name:<9} "
                  f"{r['apgr']:6.3f} {r['cpt50']:7.1%} {r['cpt80']:7.1%} "
                  f"{r['share95']:13.1%} {r['saving95']:12.0%}")
    print("random router: APGR 0.5, CPT(50%) 50%, CPT(80%) 80% by construction")


if __name__ == "__main__":
    main()
