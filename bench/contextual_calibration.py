"""Does the query's embedding sharpen a cascade's confidence? A calibration tried and dropped.

    triage collect --out out/ladder-full.csv          # all 307 probes x 3 models
    python bench/contextual_calibration.py [--table out/ladder-full.csv] [--price-ratio 10]

Per model, P(right) from the recorded confidence (the mean answer-token logprob) by the
cascade's isotonic calibration, against a "contextual" one: a logistic regression on the
standardised confidence, an 8-dimensional PCA of the query's MiniLM embedding and their
products, so that each kind of question may have its own confidence scale. Each is scored
by its test AUC per model and by the cascades it makes: the AIQ over cost of the envelope of
every cost-ordered ladder of two or three models at thresholds 0, 0.05, ..., 1 (an upper
bound for both, measured the same way), as a share of the single models' hull-to-oracle
gap; on the test split, and leave-one-task-out (fitted on the other five probe kinds).

``--price-ratio R`` re-prices the ladder R times dearer a tier (the recorded prices differ
by 2.3 times from end to end, too little for any cascade to pay: API ladders span 100
times and more); the confidences and outcomes are the recorded ones.
"""

from __future__ import annotations

import argparse
import itertools
import warnings

import numpy as np

from llmtriage import metrics
from llmtriage.data import load_table
from llmtriage.signals.embedder import default_embedder

THRESHOLDS = np.linspace(0.0, 1.0, 21)


def with_context(confidence: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The confidence, the query's embedding components, and their products."""
    c = confidence[:, None]
    return np.hstack([c, z, c * z])


def calibrated(method: str, conf: np.ndarray, right: np.ndarray, x: np.ndarray,
               fit: np.ndarray, score: np.ndarray) -> np.ndarray:
    """P(right) on the ``score`` rows, per model, from the ``fit`` rows."""
    from sklearn.decomposition import PCA
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    out = np.zeros((len(score), conf.shape[1]))
    if method == "contextual":
        pca = PCA(8, random_state=0).fit(x[fit])
        z_fit, z_score = pca.transform(x[fit]), pca.transform(x[score])
    for j in range(conf.shape[1]):
        y = right[fit, j]
        if y.all() or not y.any():
            out[:, j] = y.mean()
        elif method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
            out[:, j] = iso.fit(conf[fit, j], y).predict(conf[score, j])
        else:
            mu, sd = conf[fit, j].mean(), conf[fit, j].std() + 1e-9
            model = LogisticRegression(C=1.0, max_iter=3000).fit(
                with_context((conf[fit, j] - mu) / sd, z_fit), y)
            out[:, j] = model.predict_proba(
                with_context((conf[score, j] - mu) / sd, z_score))[:, 1]
    return out


def envelope(p: np.ndarray, right: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """(mean cost, mean quality) of the single models and of every cost-ordered ladder at
    every threshold."""
    m = right.shape[1]
    points = [(cost[:, j].mean(), right[:, j].mean()) for j in range(m)]
    for size in range(2, m + 1):
        for ladder in itertools.combinations(range(m), size):
            for threshold in THRESHOLDS:
                open_ = np.ones(len(p), dtype=bool)
                spent, quality = np.zeros(len(p)), np.zeros(len(p))
                for k, j in enumerate(ladder):
                    spent[open_] += cost[open_, j]
                    take = open_ & ((p[:, j] >= threshold) | (k == size - 1))
                    quality[take] = right[take, j]
                    open_ &= ~take
                points.append((spent.mean(), quality.mean()))
    return np.array(points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", default="out/ladder-full.csv")
    parser.add_argument("--price-ratio", type=float, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from sklearn.metrics import roc_auc_score

    table = load_table(f"long:{args.table}")
    order = np.argsort(np.nanmean(table.cost_usd, axis=0))
    right = table.quality[:, order] >= 0.5
    cost = np.nan_to_num(table.cost_usd[:, order])
    if args.price_ratio:
        cost = cost / cost.mean(axis=0) * args.price_ratio ** np.arange(len(order))
    conf = table.confidence[:, order].copy()
    floor = np.nanmin(np.where(np.isfinite(conf), conf, np.nan)) - 1.0
    conf[~np.isfinite(conf)] = floor  # a cut-off answer: below every finished one
    x = default_embedder().embed(list(table.prompts))
    print(f"{table.n_prompts} prompts; models {[table.models[i] for i in order]}; price "
          f"ratio {args.price_ratio or 'as recorded'}")
    cases = [("test split", np.flatnonzero(table.splits == "train"),
              np.flatnonzero(table.splits == "test"))]
    cases += [(f"held out {t}", np.flatnonzero(table.tasks != t), np.flatnonzero(table.tasks == t))
              for t in sorted(set(table.tasks.tolist()))]
    for label, fit, score in cases:
        r, c = right[score].astype(float), cost[score]
        single = np.array([(c[:, j].mean(), r[:, j].mean()) for j in range(r.shape[1])])
        span = (single[:, 0].min(), single[:, 0].max())
        hull = metrics.aiq(single[:, 0], single[:, 1], span)
        cheapest_right = np.where(r.any(axis=1), np.argmax(r, axis=1), 0)
        oracle = metrics.aiq(np.r_[single[:, 0], c[np.arange(len(score)), cheapest_right].mean()],
                             np.r_[single[:, 1], r.max(axis=1).mean()], span)
        line = [f"{label:26s} n={len(score):4d}"]
        for method in ("isotonic", "contextual"):
            p = calibrated(method, conf, right, x, fit, score)
            pts = envelope(p, r, c)
            share = (metrics.aiq(pts[:, 0], pts[:, 1], span) - hull) / max(oracle - hull, 1e-12)
            aucs = [roc_auc_score(r[:, j], p[:, j]) if 0 < r[:, j].mean() < 1 else np.nan
                    for j in range(r.shape[1])]
            line.append(f"{method}: gap {100 * share:+.1f}%, AUC "
                        + "/".join("-" if np.isnan(a) else f"{a:.3f}" for a in aucs))
        print("  ".join(line), flush=True)


if __name__ == "__main__":
    main()
