"""Record a model ladder's outcomes on a prompt set: how users characterize their own models.

Every (prompt, model) answer is graded and appended to a journal (one JSON line, flushed)
the moment it is done; the outcome table is then written from the journal, atomically. A run
killed halfway leaves a journal of finished rows; the next run reads it, skips them, and
computes only the rest. A line that is not a finished row (torn by a kill mid-write, or
edited by hand into something else) is dropped and its answer recomputed; the rows around
it are kept. One run at a time holds a journal: a second collection into the same table is
refused while the first runs, instead of computing every answer again beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from llmtriage.backends.live import BackendError, ChatRequest, Completion
from llmtriage.data.jsontext import loads
from llmtriage.data.loaders.generic import write_frame
from llmtriage.data.splits import hash_splits
from llmtriage.probes import Probe, prompt_of
from llmtriage.signals.logprob import logprob_stats, mean_logprob

#: Token budget for a probe answer: enough for a short answer, not for an essay.
MAX_TOKENS = 24


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".journal.jsonl")


def probe_request(probe: Probe) -> ChatRequest:
    return ChatRequest.ask(prompt_of(probe), max_tokens=probe.max_tokens or MAX_TOKENS)


def sample(probes: Sequence[Probe], n: int | None) -> list[Probe]:
    """``n`` probes evenly spaced through the set (every kind represented), or all."""
    if n is None or n >= len(probes):
        return list(probes)
    picks = np.linspace(0, len(probes) - 1, n).round().astype(int)
    return [probes[i] for i in sorted(set(picks.tolist()))]


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def outcome_row(probe: Probe, split: str, completion: Completion) -> dict:
    stats = logprob_stats(completion.logprobs)
    return {
        "prompt_id": probe.id,
        "prompt": prompt_of(probe),  # what the models saw: what a router sees when served
        "task": probe.kind,
        "split": split,
        "difficulty": probe.difficulty,
        "gold": probe.answer,
        "model": completion.model,
        "quality": probe.grade(completion.text),
        "cost_usd": completion.cost_usd,
        "tokens_in": completion.tokens_in,
        "tokens_out": completion.tokens_out,
        "latency_ms": completion.latency_ms,
        "energy_j": _finite(completion.energy_j),
        "confidence": _finite(mean_logprob(completion)),  # -inf when cut off at the limit
        "confidence_signal": "mean_logprob",
        "logprob_min": _finite(stats.min),
        "logprob_first_margin": _finite(stats.first_margin),
        "response": completion.text,
    }


class JournalRow(BaseModel):
    """What a resumed run trusts of a journal line before it skips that answer (the rest
    of the row is carried into the table as written, where the long format checks it)."""

    model_config = ConfigDict(extra="allow")

    prompt_id: StrictStr
    model: StrictStr
    quality: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]


def read_journal(path: Path) -> tuple[list[dict], int]:
    """The finished rows, and how many lines were not one (dropped from the file, so that
    appends start on a clean line and those answers are computed again)."""
    if not path.is_file():
        return [], 0
    rows, damaged = [], 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = loads(line)
                JournalRow.model_validate(row)
            except (ValueError, ValidationError):
                damaged += 1
                continue
            rows.append(row)
    if damaged:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)
    return rows, damaged


class CollectError(RuntimeError):
    """Some answers could not be had (a prompt past a model's context, an upstream that
    kept failing): listed together once every other answer is journaled. Or the journal
    is another run's."""


def claim(journal: Path) -> IO[str]:
    """The journal, opened to append and locked to this run (the lock goes with the
    process, however it ends): two runs into one table would each compute every answer
    and interleave their rows, and a run that drops a torn line rewrites the file under
    the other."""
    sink = journal.open("a")
    try:
        fcntl.flock(sink.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sink.close()
        raise CollectError(f"{journal} is in use by another collection into the same "
                           "table: wait for it to finish (a run again then reuses its "
                           "answers), or collect into another --out") from None
    except OSError:  # a file system without locks (some network and FUSE mounts): unguarded
        pass
    return sink


@dataclass
class CollectResult:
    out: Path
    rows: int
    computed: int
    reused: int
    #: Journal lines that were not a finished row (dropped; their answers computed again).
    damaged: int = 0


class Answerer(Protocol):
    """What collection needs of its models: a local :class:`ModelPool`, or the cluster's
    (:class:`llmtriage.backends.ray_cluster.RayModels`)."""

    models: tuple[str, ...]

    async def complete(self, name: str, request: ChatRequest) -> Completion: ...


@contextlib.contextmanager
def _held(journal: Path) -> Iterator[tuple[IO[str], list[dict], int]]:
    """The journal claimed by this run, with its finished rows and how many lines were not
    one."""
    sink = claim(journal)
    try:
        journaled, damaged = read_journal(journal)
        if damaged:  # the journal was rewritten as a new file: the lock goes with that one
            sink.close()
            sink = claim(journal)
        yield sink, journaled, damaged
    finally:
        sink.close()


async def collect(
    pool: Answerer,
    probes: Sequence[Probe],
    out: str | Path,
    *,
    test_fraction: float = 0.3,
    on_start: Callable[[int, int], None] | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> CollectResult:
    """Answer every probe with every model of the pool, resuming from the journal."""
    out = Path(out)
    journal = journal_path(out)
    journal.parent.mkdir(parents=True, exist_ok=True)
    with _held(journal) as (sink, journaled, damaged):
        done_rows = [r for r in journaled if r["model"] in pool.models]
        done = {(r["prompt_id"], r["model"]) for r in done_rows}
        ids = [p.id for p in probes]
        splits = dict(zip(ids, hash_splits(np.array(ids, dtype=object), test_fraction),
                          strict=True))
        todo = [(p, m) for p in probes for m in pool.models if (p.id, m) not in done]
        if on_start:
            on_start(len(todo), len(done))
        lock = asyncio.Lock()

        failed: list[str] = []

        async def one(probe: Probe, model: str) -> None:
            try:
                completion = await pool.complete(model, probe_request(probe))
            except BackendError as exc:  # this answer only: the others still finish and journal
                named = str(exc).startswith(f"{model}:")  # most backends name the model
                failed.append(f"probe {probe.id!r}{'' if named else f' on {model}'}: {exc}")
                return
            row = outcome_row(probe, splits[probe.id], completion)
            async with lock:
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
            if on_row:
                on_row(row)

        await asyncio.gather(*(one(p, m) for p, m in todo))
        if failed:
            more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
            raise CollectError(
                f"{len(failed)} of {len(todo)} answers failed; the {len(todo) - len(failed)} "
                "that finished are journaled, and a run again computes only the rest: "
                + "; ".join(failed[:5]) + more)
        rows = [r for r in read_journal(journal)[0] if r["model"] in pool.models]
        wanted = {p.id for p in probes}
        frame = pd.DataFrame([r for r in rows if r["prompt_id"] in wanted])
        frame = frame.drop_duplicates(["prompt_id", "model"], keep="last")
        # Rows finish in any order; the table lists prompts and models in a fixed order.
        prompt_rank = {p.id: i for i, p in enumerate(probes)}
        model_rank = {m: i for i, m in enumerate(pool.models)}
        frame = frame.sort_values(["prompt_id", "model"], key=lambda col: col.map(
            prompt_rank if col.name == "prompt_id" else model_rank)).reset_index(drop=True)
        write_frame(frame, out)
        return CollectResult(out, len(frame), len(todo), len(done), damaged)
