"""Device and cloud on the same questions: what the local ladder saves a cloud deployment.

    triage collect --out out/edge-crux.csv --probes crux:../shared/data/zeroeval \\
        --sample 200 --models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b
    triage collect --out out/edge-arc.csv --probes arc:../shared/data/routerbench \\
        --sample 150 --models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b
    python bench/edge_cloud.py [--crux out/edge-crux.csv] [--arc out/edge-arc.csv]
                               [--plot out/edge-network.png] [--resamples 1000]

Each joint table (:mod:`llmtriage.data.joint`) holds the device's two Qwen coders, measured
here, and the benchmark's recorded cloud models (CRUXEval: ZeroEval's 48; ARC-Challenge:
RouterBench's 11). On its train split (the device recording's hash split) four groups of
policies are cross-validated and one setting chosen per objective, then measured on the
test split:

- always cloud (the best cloud model of the train split), always local (the better device
  model of the train split);
- cloud-only routing: logistic and kNN routers over the cloud models alone;
- local-first: calibrated cascades that ask a device model first and escalate to one cloud
  model (device > cloud, and 0.5B > 1.5B > cloud), each rung's confidence calibrated;
- cascade routing over device and cloud models (each step any model, or stop);
- every tier: the routers over device and cloud models together, the local-first cascades
  and cascade routing, whichever the objective picks.

Objectives (chosen on train only): the best cloud model's train quality at the least cost,
and a cheaper cloud model's (the cheapest within 10 points of the best). Reported: test
quality and cost, and the cloud spend saved against always-cloud with a 95% bootstrap
interval over test queries.

Then the network sweep: round trip 20 ms to 2 s (folded into every cloud latency before
fitting, so the policies know the link) and outage rate 0 to 50% (each outage found out by
a 1 s connect timeout; the device answers, or, with no device, the request fails): quality,
cost, latency p50/p95 and the share answered degraded, printed and plotted. At each round
trip every group's policy is chosen on train for the least mean latency at the cheaper
cloud model's quality, so a slow link moves the choice towards the device.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from llmtriage.data import load_table  # noqa: E402
from llmtriage.data.joint import CloudTiming, cloud_models, join_tiers, over_link  # noqa: E402
from llmtriage.data.loaders import routerbench, zeroeval  # noqa: E402
from llmtriage.data.table import TEST, TRAIN, OutcomeTable  # noqa: E402
from llmtriage.evaluation.evaluate import replay  # noqa: E402
from llmtriage.evaluation.network import Outages, Served, served  # noqa: E402
from llmtriage.policies.base import Policy  # noqa: E402
from llmtriage.policies.baselines import SingleModel  # noqa: E402
from llmtriage.policies.cascades import CalibratedCascade  # noqa: E402
from llmtriage.policies.search import Objective, choose, cross_validate  # noqa: E402
from llmtriage.policies.search.candidates import candidates  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEVICE = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
RTTS = (20.0, 100.0, 300.0, 1000.0, 2000.0)
OUTAGES = (0.0, 0.1, 0.25, 0.5)
DETECT_MS = 1000.0
console = Console(width=150)


def joint_tables(crux: Path, arc: Path, timing: CloudTiming | None = None
                 ) -> list[OutcomeTable]:
    out = []
    if crux.is_file():
        cloud = zeroeval.load(SHARED / "zeroeval", task="crux")
        out.append(join_tiers(load_table(str(crux)), cloud, timing, name="CRUXEval"))
    if arc.is_file():
        cloud = routerbench.load(SHARED / "routerbench" / "arc_challenge_test.csv")
        train = routerbench.load(SHARED / "routerbench" / "arc_challenge_train.csv")
        both = _stack(train, cloud)
        out.append(join_tiers(load_table(str(arc)), both, timing, name="ARC-Challenge"))
    return out


def _stack(a: OutcomeTable, b: OutcomeTable) -> OutcomeTable:
    """RouterBench's train and test files as one cloud table (the device's split rules)."""
    models = [m for m in a.models if m in b.models]
    a, b = a.select_models(models), b.select_models(models)
    from llmtriage.data.table import OUTCOME_COLUMNS

    return OutcomeTable.build(
        models, np.concatenate([a.prompt_ids, b.prompt_ids]),
        np.vstack([a.quality, b.quality]), name="routerbench-arc",
        notes=[*a.notes, *b.notes],
        **{c: np.vstack([getattr(a, c), getattr(b, c)]) for c in OUTCOME_COLUMNS})


@dataclass
class Group:
    name: str
    table: OutcomeTable        # the view its policies see (all tiers, or the cloud only)
    policies: list[Policy]
    device: int | None         # what answers on the device when the cloud is down


def groups(table: OutcomeTable) -> list[Group]:
    train = table.split(TRAIN)
    cloud = cloud_models(table, DEVICE)
    q, cost = train.quality.mean(axis=0), np.nanmean(train.cost_usd, axis=0)
    best_cloud = table.models[int(np.argmax(np.where(cloud, q, -1)))]
    best_local = table.models[int(np.argmax(np.where(cloud, -1, q)))]
    cloud_view = table.select_models([m for m, c in zip(table.models, cloud, strict=True) if c])
    tops = sorted((i for i in np.flatnonzero(cloud) if q[i] >= q.max() - 0.10),
                  key=lambda i: cost[i])[:3]
    ladders = [(d, table.models[i]) for d in DEVICE for i in tops]
    ladders += [(*DEVICE, table.models[i]) for i in tops]
    local_first = [CalibratedCascade(list(ladder)) for ladder in ladders]
    routers = candidates(train, ("logistic", "knn"), embedder="minilm")
    cascade_routing = candidates(train, ("cascade-routing",), embedder="minilm")
    cloud_routers = candidates(cloud_view.split(TRAIN), ("logistic", "knn"), embedder="minilm")
    device = table.model_index(best_local)
    return [
        Group("always cloud", table, [SingleModel(best_cloud)], None),
        Group("always local", table, [SingleModel(best_local)], device),
        Group("cloud-only routing", cloud_view, [*cloud_routers,
                                                 *candidates(cloud_view.split(TRAIN),
                                                             ("single",))], None),
        Group("local-first cascade", table, local_first, device),
        Group("cascade routing", table, cascade_routing, device),
        Group("every tier", table, [*local_first, *routers, *cascade_routing], device),
    ]


def targets(table: OutcomeTable) -> dict[str, float]:
    train = table.split(TRAIN)
    cloud = cloud_models(table, DEVICE)
    q, cost = train.quality.mean(axis=0), np.nanmean(train.cost_usd, axis=0)
    best = int(np.argmax(np.where(cloud, q, -1)))
    near = [i for i in np.flatnonzero(cloud) if q[i] >= q[best] - 0.10]
    cheap = min(near, key=lambda i: cost[i])
    return {f"quality of {table.models[best]} ({q[best]:.3f})": float(q[best]),
            f"quality of {table.models[cheap]} ({q[cheap]:.3f})": float(q[cheap])}


def chosen(group: Group, objective: Objective) -> Policy:
    policies = group.policies
    if len(policies) == 1 and not policies[0].tradeoff:
        return policies[0].fit(group.table.split(TRAIN))
    train = group.table.split(TRAIN)
    outcomes = cross_validate(train, policies, folds=3, seed=0)
    return choose(train, objective, outcomes).policy


def described(policy: Policy) -> str:
    """The chosen policy in a few words: a cascade's ladder and thresholds, a router's lam."""
    ladder = getattr(policy, "ladder", None)
    if ladder:
        short = " > ".join(m.split("/")[-1][:22] for m in ladder)
        threshold = np.atleast_1d(getattr(policy, "threshold", []))
        return f"{short} @ {', '.join(f'{t:.2f}' for t in threshold)}"
    lam = getattr(policy, "lam", None)
    return f"{policy.name} (lam {lam:.3g})" if lam is not None else policy.label


def run(group: Group, policy: Policy, outages: Outages | None = None) -> Served:
    test = group.table.split(TEST)
    trace = replay(policy, test)
    cloud = cloud_models(test, DEVICE)
    return served(trace, test, cloud, group.device, outages)


def saving(policy: Served, cloud: Served, resamples: int) -> tuple[float, float, float]:
    """Cloud spend saved against always-cloud, with a 95% bootstrap interval."""
    n = len(policy.cost_usd)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n, (resamples, n))
    ratio = policy.cost_usd[idx].mean(axis=1) / cloud.cost_usd[idx].mean(axis=1)
    point = 1 - policy.cost_usd.mean() / cloud.cost_usd.mean()
    return point, float(1 - np.quantile(ratio, 0.975)), float(1 - np.quantile(ratio, 0.025))


def interval(values: np.ndarray, resamples: int) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def spend_table(table: OutcomeTable, resamples: int) -> None:
    test = table.split(TEST)
    console.print(f"\n[bold]{table.name}[/]: {table.n_prompts} prompts "
                  f"({len(table.split(TRAIN))} train, {len(test)} test), "
                  f"{table.n_models} models ({len(DEVICE)} on the device)")
    for note in table.notes[:2]:
        console.print(f"  {note}")
    all_groups = groups(table)
    for label, value in targets(table).items():
        objective = Objective("quality", value)
        out = Table(title=f"{table.name}: target the {label} on train, least cost")
        for col in ("policy group", "chosen", "test quality [95%]", "cost/query",
                    "cloud spend saved [95%]", "latency p50"):
            out.add_column(col)
        reference = None
        for group in all_groups:
            policy = chosen(group, objective)
            result = run(group, policy)
            if reference is None:
                reference = result
            lo, hi = interval(result.quality, resamples)
            save, s_lo, s_hi = saving(result, reference, resamples)
            out.add_row(group.name, described(policy),
                        f"{result.quality.mean():.3f} [{lo:.3f}, {hi:.3f}]",
                        f"${result.cost_usd.mean():.2e}",
                        f"{save:+.0%} [{s_lo:+.0%}, {s_hi:+.0%}]",
                        f"{np.percentile(result.latency_ms, 50):,.0f} ms")
        console.print(out)


def network_sweep(table: OutcomeTable, plot: Path | None) -> None:
    cloud = cloud_models(table, DEVICE)
    rows = []
    target = list(targets(table).values())[-1]  # the cheaper cloud model's train quality
    objective = Objective("quality", target, minimize="latency")
    for rtt in RTTS:
        linked = over_link(table, cloud, rtt)
        for group in groups(linked):
            if group.name == "always local":
                continue
            policy = chosen(group, objective)
            for rate in OUTAGES:
                result = run(group, policy, Outages(rate, DETECT_MS, seed=0))
                rows.append({"rtt_ms": rtt, "outage": rate, "group": group.name,
                             "policy": described(policy), **result.summary()})
    out = Table(title=f"{table.name}: network sweep (each group's policy chosen on train at "
                      f"each round trip: the least mean latency at quality >= {target:.3f})")
    for col in ("RTT ms", "outage", "group", "quality", "cost/query", "p50 ms", "p95 ms",
                "degraded"):
        out.add_column(col)
    for r in rows:
        out.add_row(f"{r['rtt_ms']:g}", f"{r['outage']:.0%}", r["group"], f"{r['quality']:.3f}",
                    f"${r['cost_usd']:.2e}", f"{r['latency_p50_ms']:,.0f}",
                    f"{r['latency_p95_ms']:,.0f}", f"{r['degraded']:.0%}")
    console.print(out)
    if plot is not None:
        _plot(rows, table.name, plot.with_name(f"{plot.stem}-{table.name}{plot.suffix}"))


def _plot(rows: list[dict], name: str, path: Path) -> None:
    metrics = (("quality", "quality"), ("cost_usd", "cost per query (USD)"),
               ("latency_p95_ms", "latency p95 (ms)"), ("degraded", "answered degraded"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(18, 4.2))
    names = sorted({r["group"] for r in rows})
    colors = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    styles = dict(zip(OUTAGES, ("-", "--", "-.", ":"), strict=True))
    for ax, (key, label) in zip(axes, metrics, strict=True):
        for group in names:
            for rate in OUTAGES:
                pts = [r for r in rows if r["group"] == group and r["outage"] == rate]
                ax.plot([r["rtt_ms"] for r in pts], [r[key] for r in pts], styles[rate],
                        color=colors[group], marker="o", ms=3,
                        label=f"{group}, outage {rate:.0%}" if key == "quality" else None)
        ax.set_xscale("log")
        ax.set_xlabel("link round trip (ms)")
        ax.set_title(label)
    fig.legend(loc="lower center", ncol=4, fontsize=7)
    fig.suptitle(f"{name}: policies under a network sweep")
    fig.tight_layout(rect=(0, 0.18, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    console.print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crux", type=Path, default=Path("out/edge-crux.csv"))
    parser.add_argument("--arc", type=Path, default=Path("out/edge-arc.csv"))
    parser.add_argument("--plot", type=Path, default=Path("out/edge-network.png"))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--sweep-only", action="store_true")
    parser.add_argument("--first-token-ms", type=float, default=CloudTiming.first_token_ms,
                        help="the cloud latency model: time to the first token")
    parser.add_argument("--ms-per-token", type=float, default=CloudTiming.ms_per_token,
                        help="the cloud latency model: time per output token")
    args = parser.parse_args()
    tables = joint_tables(args.crux, args.arc, CloudTiming(args.first_token_ms,
                                                           args.ms_per_token))
    if not tables:
        raise SystemExit("no device recording found: run the `triage collect` commands above")
    for table in tables:
        if not args.sweep_only:
            spend_table(table, args.resamples)
        if not args.no_sweep:
            network_sweep(table, args.plot)


if __name__ == "__main__":
    main()
