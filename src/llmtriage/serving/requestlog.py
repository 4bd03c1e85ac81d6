"""The request log: every request the gateway answered (or refused), in SQLite.

One row per request: client key name, policy, session, status, the model that answered,
each step (model, confidence, cost, latency, fallback), totals, optionally the prompt and
answer text, and the quality feedback attached later (``POST /v1/feedback``). The gateway
answers a request once its row is committed, so a crash (even SIGKILL) loses no
acknowledged request. Rows go to one background thread, and the rows waiting when it is
free are committed together (group commit: one transaction for all of them), so under load
the event loop never waits on the disk. A row that arrives while that thread is idle (a
lone request) is committed on the event loop itself, if a SQLite file takes it at once: one
row appended to the write-ahead log, on a connection that never waits for a lock and never
checkpoints (the thread checkpoints for it), which costs less than the two thread handoffs
it saves (the thread's 0.2 ms of CPU a request; 0.04-0.22 ms saved in all, measured). Reads
that must see earlier writes (feedback) queue behind the rows on the thread.

A write that fails is never silent and never loses spend: the row is retried without its
text and steps; if that fails too (a locked or broken database), its spend goes to a
journal beside the log (``<log>.spend.jsonl``, appended and flushed), which the next start
folds back into the database. Each failure is counted (``triage_log_errors_total``) and
reported on stderr, at most once a minute.

Rows older than the log's retention are removed by the same thread, a few thousand at a
time between batches, once an hour; their spend moves to ``spend_carried`` in the same
transaction, so a key's budget counts every request it ever made.

:func:`export_frame` turns the rows with feedback into the long outcome format, so a router
can be retrained on production traffic (``triage export``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from llmtriage.data.errors import DataError, faults
from llmtriage.data.jsontext import dumps, loads
from llmtriage.serving.logdb import TASK_VERSION, is_url, open_database

COLUMNS = ("id", "created", "client", "policy", "session", "status", "answered_by", "steps",
           "cost_usd", "latency_ms", "tokens_in", "tokens_out", "prompt", "answer", "error",
           "task")


def upsert(columns: tuple[str, ...]) -> str:
    """INSERT of ``columns`` replacing the row with the same id (SQLite and PostgreSQL)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id")
    return (f"INSERT INTO requests ({', '.join(columns)}) VALUES "
            f"({', '.join('?' * len(columns))}) ON CONFLICT (id) DO UPDATE SET {updates}")


UPSERT = upsert(COLUMNS)

#: The columns a row keeps when the whole row cannot be written.
ESSENTIAL = ("id", "created", "client", "policy", "status", "cost_usd")


def journal_for(target: str | Path) -> Path:
    """Where a log's rows go when they cannot be written: beside a SQLite file, in the
    data folder for a PostgreSQL URL (named by a hash of it)."""
    if not is_url(target):
        path = Path(target)
        return path.with_name(path.name + ".spend.jsonl")
    from llmtriage.serving.config import default_log_path

    name = hashlib.sha256(str(target).encode()).hexdigest()[:16]
    return default_log_path().with_name(f"postgres-{name}.spend.jsonl")


#: The most rows one transaction commits.
MAX_BATCH = 256
#: Rows committed on the event loop between two checkpoints by the writer thread.
CHECKPOINT_EVERY = 500
#: How often expired rows are removed, and the most removed in one transaction (so that
#: rows waiting to be written never wait long behind it).
PRUNE_EVERY_S = 3600.0
PRUNE_CHUNK = 5000
#: Adds removed rows' spend to their key's carried spend (SQLite and PostgreSQL).
CARRY = ("INSERT INTO spend_carried (client, cost_usd) VALUES (?, ?) ON CONFLICT (client) "
         "DO UPDATE SET cost_usd = spend_carried.cost_usd + excluded.cost_usd")


def _settle(futures: list[asyncio.Future]) -> None:
    for future in futures:
        if not future.done():  # a request cancelled meanwhile stopped waiting
            future.set_result(None)


class Writer:
    """The one thread that owns the database: rows waiting together are committed in one
    transaction; other work (a read that must see earlier writes) runs in order between
    batches."""

    def __init__(self, write_rows: Callable[[list[dict[str, Any]]], None],
                 commit_now: Callable[[dict[str, Any]], bool] | None = None,
                 checkpoint: Callable[[], None] | None = None) -> None:
        """``commit_now``: commits a row on the calling thread if it can at once (False
        leaves it to the thread, which handles failures in full); ``checkpoint``: what the
        thread runs after every :data:`CHECKPOINT_EVERY` rows committed that way."""
        self._write_rows = write_rows
        self._commit_now, self._checkpoint = commit_now, checkpoint
        self._committed_now = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def submit_row(self, row: dict[str, Any]) -> asyncio.Future[None]:
        """Commit a row from the event loop: here if the thread is idle and the database
        takes it at once, else on the thread. The future is done once it is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._commit_now is not None and self._queue.empty() and self._commit_now(row):
            future.set_result(None)
            self._committed_now += 1
            if self._committed_now >= CHECKPOINT_EVERY and self._checkpoint is not None:
                self._committed_now = 0
                self.submit(self._checkpoint)
            return future
        self._queue.put(("row", row, future))
        return future

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put(("call", (fn, args), future))
        return future

    def shutdown(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _flush(self, batch: list[tuple[dict[str, Any], asyncio.Future]]) -> None:
        """Commit the batch, then wake each waiting loop once for all its rows (not once a
        row: every wake-up of a loop from another thread is a system call)."""
        if batch:
            self._write_rows([row for row, _ in batch])  # never raises: spend is kept
            waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
            for _, future in batch:
                waiting.setdefault(future.get_loop(), []).append(future)
            for loop, futures in waiting.items():
                try:
                    loop.call_soon_threadsafe(_settle, futures)
                except RuntimeError:  # the loop has closed: nobody is waiting
                    pass
            batch.clear()

    def _run(self) -> None:
        batch: list[tuple[dict[str, Any], asyncio.Future]] = []
        while True:
            item = self._queue.get()
            while item is not None:
                kind, payload, future = item
                if kind == "row":
                    batch.append((payload, future))
                    if len(batch) >= MAX_BATCH:
                        self._flush(batch)
                else:
                    self._flush(batch)
                    fn, args = payload
                    try:
                        future.set_result(fn(*args))
                    except Exception as exc:  # noqa: BLE001 - handed to the caller
                        future.set_exception(exc)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._flush(batch)
            if item is None:
                return


class RequestLog:
    def __init__(self, target: str | Path, log_text: bool = False,
                 retention_s: float | None = None) -> None:
        """``target``: a SQLite file or a postgresql:// URL; ``retention_s``: how long a
        row is kept (None: for ever)."""
        self.log_text = log_text
        self.retention_s = retention_s
        #: The first row recorded starts the first pruning (not the constructor: the
        #: gateway reads spend and feedback on this connection while it starts).
        self._next_prune = 0.0
        self.journal = journal_for(target)
        #: Called on every failed write (the gateway counts them).
        self.on_error: Callable[[], None] | None = None
        self._reported = 0.0
        self._db = open_database(target)
        self.path = self._db.where
        self._now = self._db.without_waits()
        self._writer = Writer(self._insert_all,
                              None if self._now is None else self._commit_now,
                              self._db.checkpoint)
        self._fold_journal()

    def _fold_journal(self) -> None:
        """Rows whose write failed before, from the spend journal into the database."""
        if not self.journal.is_file():
            return
        rows = []
        for line in self.journal.read_text(errors="replace").splitlines():
            try:
                row = loads(line)
                rows.append(tuple(row[c] for c in ESSENTIAL))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash: nothing to fold
        try:
            with self._db.transaction():
                self._db.executemany(
                    f"INSERT INTO requests ({', '.join(ESSENTIAL)}, steps, error) "
                    f"VALUES ({', '.join('?' * len(ESSENTIAL))}, '[]', "
                    "'recovered from the spend journal') ON CONFLICT DO NOTHING", rows)
        except self._db.errors as exc:
            raise DataError(f"request log {self.path}: cannot fold in {self.journal}: "
                            f"{exc}") from None
        self.journal.unlink()

    def spent_by_client(self) -> dict[str, float]:
        """Every key's spend: its rows', and what removed rows carried over."""
        rows = self._db.execute(
            "SELECT client, SUM(cost_usd) FROM (SELECT client, cost_usd FROM requests "
            "WHERE client IS NOT NULL UNION ALL SELECT client, cost_usd FROM spend_carried)"
            " AS spend GROUP BY client")
        return {client: float(total or 0.0) for client, total in rows}

    def prune(self) -> int:
        """Remove up to :data:`PRUNE_CHUNK` of the oldest rows past the retention, carrying
        their spend over in the same transaction; how many went. ``DELETE ... RETURNING``
        counts only the rows this transaction removed, so replicas pruning one log at
        once never carry a row twice."""
        if self.retention_s is None:
            return 0
        cutoff = time.time() - self.retention_s
        with self._db.transaction():
            gone = self._db.execute(
                "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE created < ?"
                " ORDER BY created LIMIT ?) RETURNING client, cost_usd", (cutoff, PRUNE_CHUNK))
            carried: dict[str, float] = {}
            for client, cost in gone:
                if client is not None and cost:
                    carried[client] = carried.get(client, 0.0) + float(cost)
            if carried:
                self._db.executemany(CARRY, list(carried.items()))
        return len(gone)

    def _prune_on_writer(self) -> None:
        """One chunk on the writer thread; the next chunk queues behind the rows that
        arrived meanwhile."""
        try:
            if self.prune() == PRUNE_CHUNK:
                self._writer.submit(self._prune_on_writer)
        except self._db.errors as exc:  # a locked log: the next hour tries again
            print(f"request log {self.path}: removing rows past the retention failed "
                  f"({type(exc).__name__}: {exc}); retrying within the hour", file=sys.stderr,
                  flush=True)

    async def spent_now(self) -> dict[str, float]:
        """Every key's spend, read behind the writes queued before it."""
        return await asyncio.wrap_future(self._writer.submit(self.spent_by_client))

    def recent_by_client(self, seconds: float) -> dict[str, list[float]]:
        """Per key, the wall-clock times of its requests in the last ``seconds``."""
        rows = self._db.execute("SELECT client, created FROM requests WHERE client IS NOT "
                                "NULL AND created > ?", (time.time() - seconds,))
        recent: dict[str, list[float]] = {}
        for client, created in rows:
            recent.setdefault(client, []).append(float(created))
        return recent

    def with_feedback(self, policy: str) -> list[tuple[str, str, float]]:
        """(prompt, answering model, score) of a policy's rows with feedback and text."""
        return self._db.execute(
            "SELECT prompt, answered_by, feedback FROM requests WHERE policy = ? AND "
            "feedback IS NOT NULL AND prompt IS NOT NULL ORDER BY feedback_at", (policy,))

    def record(self, row: dict[str, Any]) -> asyncio.Future[None]:
        """Commit one row (from the event loop, see :meth:`Writer.submit_row`); the future
        is done once it is committed (or its spend is kept in the journal)."""
        if not self.log_text:
            row = {**row, "prompt": None, "answer": None}
        if self.retention_s is not None and time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            self._writer.submit(self._prune_on_writer)
        return self._writer.submit_row(row)

    @staticmethod
    def _values(row: dict[str, Any]) -> tuple:
        return tuple(dumps(row[c]).decode() if c == "steps" else row.get(c) for c in COLUMNS)

    def _commit_now(self, row: dict[str, Any]) -> bool:
        """Commit one row on this thread (the event loop) if the database takes it at
        once; False when it does not (locked, or any fault), so that the writer thread
        writes it and handles the failure in full."""
        try:  # one statement outside BEGIN ... COMMIT is its own transaction: atomic too
            self._now.execute(UPSERT, self._values(row))
            return True
        except Exception:  # noqa: BLE001 - the writer thread retries it
            return False

    def _insert_all(self, rows: list[dict[str, Any]]) -> None:
        """Commit rows in one transaction; if that fails, each on its own (see _insert)."""
        values = [self._values(row) for row in rows]
        try:
            with self._db.transaction():
                self._db.executemany(UPSERT, values)
            return
        except Exception:  # noqa: BLE001 - find the row that failed, keep the rest
            pass
        for row in rows:
            self._insert(row)

    def _insert(self, row: dict[str, Any]) -> None:
        try:
            with self._db.transaction():
                self._db.execute(UPSERT, self._values(row))
            return
        except Exception as exc:  # noqa: BLE001 - whatever failed, the spend is kept
            first = exc
        self._failed(row, first)
        essential = tuple(row.get(c) for c in ESSENTIAL)
        try:
            with self._db.transaction():
                self._db.execute(upsert((*ESSENTIAL, "steps", "error")),
                                 (*essential, "[]",
                                  f"row trimmed: {type(first).__name__}: {first}"[:500]))
            return
        except Exception as exc:  # noqa: BLE001
            self._failed(row, exc)
        with open(self.journal, "a") as journal:
            journal.write(json.dumps({c: row.get(c) for c in ESSENTIAL}) + "\n")
            journal.flush()

    def _failed(self, row: dict[str, Any], exc: Exception) -> None:
        if self.on_error is not None:
            self.on_error()
        now = time.monotonic()
        if now - self._reported >= 60.0:
            self._reported = now
            print(f"request log {self.path}: writing request {row.get('id')} failed "
                  f"({type(exc).__name__}: {exc}); its spend is kept", file=sys.stderr,
                  flush=True)

    async def feedback(self, request_id: str, score: float, client: str | None
                       ) -> dict[str, Any] | None:
        """Attach a score to a logged request of this client; None if there is none."""
        return await asyncio.wrap_future(self._writer.submit(self._feedback, request_id,
                                                             score, client))

    def _feedback(self, request_id: str, score: float, client: str | None
                  ) -> dict[str, Any] | None:
        rows = self._db.execute(
            "SELECT policy, answered_by, client FROM requests WHERE id = ? AND status = 200",
            (request_id,))
        row = rows[0] if rows else None
        if row is None or row[2] != client:  # another key's requests do not exist for you
            return None
        with self._db.transaction():
            self._db.execute("UPDATE requests SET feedback = ?, feedback_at = ? WHERE id = ?",
                             (score, time.time(), request_id))
        return {"policy": row[0], "answered_by": row[1]}

    def close(self) -> None:
        self._writer.shutdown()
        if self._now is not None:
            self._now.close()
        self._db.close()


class LoggedStep(BaseModel):
    """What export reads of one step of a logged request (the rest is for people)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str
    confidence: float | None = None


LOGGED_STEPS = TypeAdapter(list[LoggedStep])


def answering_confidence(steps: list[LoggedStep], model: str) -> float | None:
    """The confidence of the step whose answer was returned (not always the last step: a
    cascade router may accept an earlier, more confident answer)."""
    return next((step.confidence for step in reversed(steps) if step.model == model), None)


def export_frame(target: str | Path) -> pd.DataFrame:
    """The log's answered requests with feedback as the long outcome format.

    ``target``: a SQLite file or a postgresql:// URL. A prompt is named by a hash of its
    text where the text was logged (else by the request id), and repeated (prompt, model)
    pairs are averaged: the same prompts sent to several models (say, a sample passed
    through to each) make a table a router can be trained on. A log is a file the user
    names, so a row the gateway could not have written is refused, naming its request.
    """
    names = ["id", "policy", "answered_by", "feedback", "steps", "cost_usd", "latency_ms",
             "tokens_in", "tokens_out", "prompt", "answer", "task"]
    db = open_database(target, readonly=True)
    where = db.where
    try:
        # A log older than the task column reads with blank tasks.
        task = "task" if db.version() >= TASK_VERSION else "'' AS task"
        found = db.execute(f"SELECT {', '.join(names[:-1])}, {task} FROM requests "
                           "WHERE feedback IS NOT NULL AND status = 200 ORDER BY created")
    except db.errors as exc:
        raise DataError(f"request log {where}: cannot read: {exc}") from None
    finally:
        db.close()
    rows = pd.DataFrame(found, columns=names)
    score = pd.to_numeric(rows["feedback"], errors="coerce")
    if (bad := ~score.between(0, 1)).any():
        first = bad.idxmax()
        raise DataError(f"request log {where}: request {rows['id'][first]!r} has feedback "
                        f"{rows['feedback'][first]}, not a score from 0 to 1")
    named = [hashlib.sha256(p.encode()).hexdigest()[:16] if isinstance(p, str) else i
             for p, i in zip(rows["prompt"], rows["id"], strict=True)]
    confidence = []
    for ident, steps, model in zip(rows["id"], rows["steps"], rows["answered_by"],
                                   strict=True):
        try:
            confidence.append(answering_confidence(LOGGED_STEPS.validate_json(steps), model))
        except ValidationError as exc:
            raise DataError(f"request log {where}: request {ident!r}: its steps are not "
                            f"the gateway's ({faults(exc.errors())})") from None
    frame = pd.DataFrame({
        "prompt_id": named, "prompt": rows["prompt"], "model": rows["answered_by"],
        "quality": score, "cost_usd": rows["cost_usd"],
        "latency_ms": rows["latency_ms"], "tokens_in": rows["tokens_in"],
        "tokens_out": rows["tokens_out"],
        "confidence": pd.to_numeric(pd.Series(confidence, dtype=object), errors="coerce"),
        "response": rows["answer"],
    })
    numeric = ["quality", "cost_usd", "latency_ms", "tokens_in", "tokens_out", "confidence"]
    grouped = frame.groupby(["prompt_id", "model"], sort=False)
    out = grouped[numeric].mean().join(grouped[["prompt", "response"]].last()).reset_index()
    # A prompt has one task: the last one its requests named (requests that named none
    # leave it to the others).
    task = rows["task"].where(rows["task"].astype(str).str.len() > 0)
    named_task = task.groupby(pd.Series(named, index=rows.index), sort=False).last()
    out["task"] = out["prompt_id"].map(named_task).fillna("")
    return out
