"""The characterization study over several data sets (`triage report`)."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from llmtriage.cli.common import (
    MissingOpt,
    PricesOpt,
    console,
    err,
    fail,
    load_data,
    source_path,
    user_errors,
    writable,
)
from llmtriage.data.errors import repeated


def _default_sources() -> list[str]:
    """The shared data sets (``$TRIAGE_DATA``, else ../shared/data) and the ladder's
    recording (out/ladder-full.csv), where they exist."""
    root = Path(os.environ.get("TRIAGE_DATA", "../shared/data"))
    found = [f"{fmt}:{root / fmt}{suffix}" for fmt, suffix in
             (("routerbench", ""), ("zeroeval", "#gsm"), ("llmrouter", ""))
             if (root / fmt).is_dir()]
    ladder = Path("out/ladder-full.csv")
    return found + ([str(ladder)] if ladder.is_file() else [])


def report(
    sources: Annotated[list[str] | None, typer.Argument(
        help="Data sets, as for bench; SOURCE#TASK keeps one task (a path that exists as "
        "given is a source whole). Default: every shared set found ($TRIAGE_DATA or "
        "../shared/data) and out/ladder-full.csv.",
        show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.html, report.md and "
                                      "the plots.")] = Path("out/report"),
    held_out: Annotated[bool, typer.Option(
        help="Also fit on all tasks but one and score the held-out task.")] = True,
    embedder: Annotated[str | None, typer.Option(
        help="The routers' query features: minilm (default) or hashing (instant).")] = None,
    prices: PricesOpt = None,
    missing: MissingOpt = None,
) -> None:
    """The characterization study: every technique family searched on each data set's train
    split, scored on its test split (and leave-one-task-out), written as HTML and Markdown
    with plots, tables and the measured reasons each technique wins where it does."""
    from llmtriage.evaluation.study import count_candidates, study
    from llmtriage.evaluation.study_report import write

    names = list(sources or _default_sources())
    if not names:
        fail("no data sets given and none found; name them (e.g. routerbench:DIR)")
    parts = [_source_and_task(name) for name in names]
    labels = _set_labels(parts)
    if twice := repeated(labels):
        fail(f"data set(s) {twice} given twice (a set is named by its path and task; each "
              "has its own section and plots)")
    writable(out, folder=True)
    with user_errors():
        sets = []
        for (source, task), label in zip(parts, labels, strict=True):
            sets.append((label, load_data(source, task or None, prices, missing=missing)))
        total = sum(count_candidates(table, held_out) for _, table in sets)
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total} candidates"),
                      TimeElapsedColumn(), console=err, transient=True) as bar:
            job = bar.add_task("cross-validating", total=total)
            studies = study(sets, lambda label: bar.update(
                job, advance=1, description=f"cross-validating {label[:40]}"),
                held_out=held_out, embedder=embedder)
        html_path, md_path = write(studies, out)
    for s in studies:
        console.print(f"{escape(s.name)}: best technique {escape(s.winner)} "
                      f"({s.seconds:.0f} s)")
    console.print(f"wrote {html_path} and {md_path}")


def _source_and_task(name: str) -> tuple[str, str]:
    """``SOURCE#TASK`` split at its last ``#``; a name whose whole path exists is a source
    as it stands (a file named ``run#1.csv`` keeps its name)."""
    source, sep, task = name.rpartition("#")
    if not sep or source_path(name).exists():
        return name, ""
    return source, task


def _set_labels(sources: list[tuple[str, str]]) -> list[str]:
    """What the report calls each (source, task): its file or folder name and the task it
    keeps, with as many parent folders as tell apart two sets of one name
    (``runs/a/out.csv`` and ``runs/b/out.csv`` become ``a/out.csv`` and ``b/out.csv``)."""
    paths = [posixpath.normpath(source).split("/") for source, _ in sources]
    full = [(tuple(path), task) for path, (_, task) in zip(paths, sources, strict=True)]
    depth = [1] * len(paths)

    def label(i: int) -> str:
        name = "/".join(paths[i][-depth[i]:])
        return f"{name}#{sources[i][1]}" if sources[i][1] else name

    while True:
        labels = [label(i) for i in range(len(paths))]
        # A label shared by different sets (the same set named twice stays as it is).
        clash = {text for text in repeated(labels)
                 if len({f for f, t in zip(full, labels, strict=True) if t == text}) > 1}
        grow = [i for i, text in enumerate(labels) if text in clash and depth[i] < len(paths[i])]
        if not grow:
            return labels
        for i in grow:
            depth[i] += 1
