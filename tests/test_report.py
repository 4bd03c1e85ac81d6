"""`triage report`: the characterization study written as HTML and Markdown, opened in a
real headless Chromium to check that its plots decode and its tables are there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from llmtriage.data import load_table
from llmtriage.data.loaders.generic import write as write_long
from llmtriage.data.loaders.generic import write_frame

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "llmtriage.cli"]


@pytest.fixture(scope="module")
def two_tasks(data_dir, tmp_path_factory):
    """Half of RouterBench's MBPP and a sixth of its Winogrande (about 200 prompts each), as
    one long-format file: two tasks, so the report also holds each task out."""
    source = f"routerbench:{data_dir / 'routerbench'}"
    mbpp = load_table(source, task="mbpp")
    wino = load_table(source, task="winogrande")
    mbpp = mbpp.take(np.flatnonzero(np.arange(mbpp.n_prompts) % 2 == 0))
    wino = wino.take(np.flatnonzero(np.arange(wino.n_prompts) % 6 == 0))
    folder = tmp_path_factory.mktemp("report")
    parts = [pd.read_csv(write_long(t, folder / f"{i}.csv")) for i, t in enumerate((mbpp, wino))]
    # One train prompt asked again under a new id, filed as test: it counts as train.
    again = parts[0][parts[0]["prompt_id"] == parts[0].loc[parts[0]["split"] == "train",
                                                           "prompt_id"].iloc[0]]
    parts.append(again.assign(prompt_id="asked-again", split="test"))
    return write_frame(pd.concat(parts), folder / "two-tasks.csv")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("headless Chromium is needed (apt-get install chromium; .ci/run does)")
    return found


def test_the_report_renders_its_plots_and_tables(two_tasks, tmp_path):
    out = tmp_path / "report"
    run = subprocess.run([*CLI, "report", f"long:{two_tasks}", "--out", str(out),
                          "--embedder", "hashing"], capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr
    assert "best technique" in run.stdout and "wrote" in run.stdout
    md = (out / "report.md").read_text()
    # The cross-data-set summary, the techniques table, and each held-out task.
    assert "Which technique wins where" in md and "oracle headroom" in md
    for technique in ("oracle", "search(routers)", "search(cascades)", "search |"):
        assert technique in md, technique
    assert "Held-out task mbpp" in md and "Held-out task winogrande" in md
    assert "test prompts repeat a train prompt's text word for word" in md
    gaps = re.findall(r"\| search \| [0-9.]+ \| (-?[0-9.]+)%", md)
    assert len(gaps) == 3  # in distribution, and each of the two held-out tasks
    pngs = sorted(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    dom = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                          "--dump-dom", (out / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    images = re.search(r'data-images="(\d+)"', body.group(0))
    rendered = re.search(r'data-rendered="(\d+)"', body.group(0))
    assert images and rendered, body.group(0)
    assert int(images.group(1)) >= 1 and rendered.group(1) == images.group(1)
    assert dom.count("<table>") >= 4  # summary, techniques, two held-out tasks


def test_report_refuses_a_bad_source_in_one_line(tmp_path):
    run = subprocess.run([*CLI, "report", str(tmp_path / "missing.csv"), "--out",
                          str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "error" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "r" / "report.html").exists()


def test_a_set_too_small_to_study_fails_before_any_set_is_studied(two_tasks, tmp_path):
    """The study ran every set before it (on every shared set, minutes each; here about
    half a minute), then failed and wrote nothing."""
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("prompt_id,model,quality,cost_usd\np1,a,1,0.1\np1,b,0,0.2\n")
    started = time.perf_counter()
    run = subprocess.run([*CLI, "report", str(two_tasks), str(tiny), "--out",
                          str(tmp_path / "r")], capture_output=True, text=True, timeout=600)
    said = " ".join(run.stderr.split())
    assert run.returncode == 2 and "tiny[train] has 1 prompt(s)" in said, said
    assert time.perf_counter() - started < 15  # studying the two-task set takes 25 s


def test_free_models_are_reported_without_inf_or_every_held_out_task_hidden(two_tasks,
                                                                           tmp_path):
    """Three of the two-task set's models, each recorded at no cost (self-hosted): the
    summary printed a price ratio of 'infx' and called two held-out tasks 'one task'."""
    rows = pd.read_csv(two_tasks)
    keep = sorted(rows["model"].unique())[:3]
    rows = rows[rows["model"].isin(keep) & (rows["prompt_id"].rank(method="dense") % 2 == 0)]
    free = write_frame(rows.assign(cost_usd=0.0), tmp_path / "free.csv")
    out = tmp_path / "r"
    run = subprocess.run([*CLI, "report", str(free), "--out", str(out), "--embedder",
                          "hashing"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    summary = next(line for line in (out / "report.md").read_text().splitlines()
                   if line.startswith("| free.csv |"))
    assert "mbpp" in summary and "winogrande" in summary, summary
    assert "inf" not in summary and "nan" not in summary and "| 1x |" in summary, summary


def test_sets_of_one_file_name_are_told_apart_by_their_folders(two_tasks, tmp_path):
    """Two runs saved as runs/a/outcomes.csv and runs/b/outcomes.csv were refused as one
    set given twice; the same file named twice still is."""
    rows = pd.read_csv(two_tasks)
    half = rows["prompt_id"].rank(method="dense") % 2 == 0
    for folder, part in (("a", rows[half]), ("b", rows[~half])):
        (tmp_path / "runs" / folder).mkdir(parents=True)
        write_frame(part, tmp_path / "runs" / folder / "outcomes.csv")
    out = tmp_path / "r"
    run = subprocess.run([*CLI, "report", "runs/a/outcomes.csv", "runs/b/outcomes.csv",
                          "--out", str(out), "--embedder", "hashing", "--no-held-out"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    md = (out / "report.md").read_text()
    assert "## a/outcomes.csv" in md and "## b/outcomes.csv" in md, md
    assert {p.name for p in out.glob("*.png")} >= {"a-outcomes-csv-cost.png",
                                                   "b-outcomes-csv-cost.png"}
    again = subprocess.run([*CLI, "report", "runs/a/outcomes.csv", "./runs/a/outcomes.csv",
                            "--out", str(tmp_path / "r2")], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert again.returncode == 2 and "given twice" in again.stderr, again.stderr


def test_a_file_with_a_hash_in_its_name_is_a_source_not_a_task(two_tasks, tmp_path):
    """`SOURCE#TASK` was split at the first `#`: a recording saved as run#1.csv was looked
    for as 'run' and refused. A name that is a file stays one; a task still follows the
    last `#`."""
    rows = pd.read_csv(two_tasks)
    write_frame(rows[rows["prompt_id"].rank(method="dense") % 2 == 0], tmp_path / "run#1.csv")
    out = tmp_path / "r"
    run = subprocess.run([*CLI, "report", "run#1.csv", "run#1.csv#winogrande", "--out",
                          str(out), "--embedder", "hashing", "--no-held-out"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    md = (out / "report.md").read_text()
    assert "## run#1.csv\n" in md and "## run#1.csv#winogrande\n" in md, md
