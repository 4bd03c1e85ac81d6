"""Write a study as one self-contained HTML page (plots inlined) and as Markdown (plots as
PNG files beside it). Every file is written whole, then renamed into place."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from llmtriage.data.files import write_atomic
from llmtriage.data.splits import split_notes
from llmtriage.evaluation.compare import Comparison
from llmtriage.evaluation.headline import Headline
from llmtriage.evaluation.plots import AXES, plot, plot_axis
from llmtriage.evaluation.study import SetStudy

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}
.note{color:#666;font-size:13px}
"""
#: Marks the page once every plot has decoded, so a headless browser can check it.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-rendered', ok.length);
});
"""


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1%}"


def _share(x: float) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return "never" if math.isinf(x) else f"{x:.0%}"


def _interval(lo: float, hi: float, fmt) -> str:  # noqa: ANN001 - a formatter
    return f"[{fmt(lo)}, {fmt(hi)}]"


def technique_rows(c: Comparison, heads: list[Headline]) -> list[list[str]]:
    """Techniques x metrics: AIQ, gap recovered, cost to match, best point's quality,
    cost, latency and energy."""
    by_name = {h.policy: h for h in heads}
    rows = [["single models (zero router)", f"{c.zero_router_aiq:.4f}", "0 (reference)", "", "",
             "", "", ""]]
    for curve in c.curves:
        if curve.family == "single":
            continue
        top = max(curve.points, key=lambda p: (p.quality, -p.cost_per_query))
        h = by_name.get(curve.name)
        gap = (f"{_pct(h.gap_recovered)} {_interval(*h.gap_ci, _pct)}" if h
               else ("100%" if curve.family == "oracle" else ""))
        match = f"{_share(h.cost_to_match)} {_interval(*h.cost_ci, _share)}" if h else ""
        rows.append([curve.name, "" if curve.aiq is None else f"{curve.aiq:.4f}", gap, match,
                     f"{top.quality:.3f}", f"${top.cost_per_query:.3g}",
                     "" if top.latency_ms is None else f"{top.latency_ms:.0f}",
                     "" if top.energy_j is None else f"{top.energy_j:.1f}"])
    return rows


TECHNIQUE_HEAD = ["technique", "AIQ", "gap recovered [95% CI]",
                  "cost to match best single [95% CI]", "best quality", "its cost/query",
                  "its latency ms", "its energy J"]
SUMMARY_HEAD = ["data set", "winner", "search: gap recovered", "search: held-out tasks",
                "signal AUC", "oracle headroom (AIQ)", "price ratio best/cheapest"]


def summary_rows(studies: list[SetStudy]) -> list[list[str]]:
    rows = []
    for s in studies:
        head = next((h for h in s.headlines if h.policy == "search"), None)
        held = [next((h for h in hs if h.policy == "search"), None) for _, _, hs in s.held_out]
        held_text = ", ".join(f"{task} {_pct(h.gap_recovered) if h else 'n/a'}"
                              for (task, _, _), h in zip(s.held_out, held, strict=True))
        r = s.reasons
        rows.append([s.name, s.winner, _pct(head.gap_recovered) if head else "n/a",
                     held_text or "one task",
                     "n/a" if r.signal_auc is None else f"{r.signal_auc:.2f} ({r.signal})",
                     f"{r.oracle_headroom:.4f}",
                     "the cheapest is free" if math.isinf(r.price_ratio)
                     else f"{r.price_ratio:.0f}x"])
    return rows


def _plots(s: SetStudy, out: Path) -> list[Path]:
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in s.name)
    paths = [plot(s.comparison, out / f"{stem}-cost.png")]
    for axis in ("latency", "energy"):
        if all(getattr(p, AXES[axis][0]) is not None for p in s.comparison.singles):
            paths.append(plot_axis(s.comparison, out / f"{stem}-{axis}.png", axis))
    return paths


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(head), line(["---"] * len(head)), *(line(r) for r in rows)])


def write(studies: list[SetStudy], out: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` (and the plots) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts_html = [f"<h1>Triage characterization report</h1><p class=note>{len(studies)} data "
                  "set(s); every technique searched on the train split by cross-validation, "
                  "scored on the test split (metrics: docs/metrics.md).</p>",
                  "<h2>Which technique wins where</h2>",
                  _html_table(SUMMARY_HEAD, summary_rows(studies))]
    parts_md = ["# Triage characterization report", "",
                f"{len(studies)} data set(s); every technique searched on the train split by "
                "cross-validation, scored on the test split.", "",
                "## Which technique wins where", "", _md_table(SUMMARY_HEAD, summary_rows(studies))]
    for s in studies:
        c = s.comparison
        # How the splits came to be (assigned by hash, repeated prompts moved to train).
        said = "".join(f"; {note}" for note in split_notes(c.notes))
        intro = (f"{len(c.models)} models, splits {c.split_sizes}{said}; studied in "
                 f"{s.seconds:.0f} s")
        parts_html += [f"<h2>{html.escape(s.name)}</h2><p class=note>{html.escape(intro)}</p>",
                       _html_table(TECHNIQUE_HEAD, technique_rows(c, s.headlines))]
        parts_md += ["", f"## {s.name}", "", intro, "",
                     _md_table(TECHNIQUE_HEAD, technique_rows(c, s.headlines))]
        for path in _plots(s, out):
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts_html.append(f'<p><img alt="{html.escape(path.stem)}" '
                              f'src="data:image/png;base64,{data}"></p>')
            parts_md += ["", f"![{path.stem}]({path.name})"]
        for task, loto, heads in s.held_out:
            title = f"Held-out task {task} (fitted on the other tasks)"
            parts_html += [f"<h3>{html.escape(title)}</h3>",
                           _html_table(TECHNIQUE_HEAD, technique_rows(loto, heads))]
            parts_md += ["", f"### {title}", "", _md_table(TECHNIQUE_HEAD,
                                                          technique_rows(loto, heads))]
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>Triage report</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
            + "\n".join(parts_html) + "</body></html>")

    def text(content: str):  # noqa: ANN202 - a writer for write_atomic
        def dump(tmp: str) -> None:
            Path(tmp).write_text(content, encoding="utf-8")
        return dump

    return (write_atomic(out / "report.html", text(page)),
            write_atomic(out / "report.md", text("\n".join(parts_md) + "\n")))
