"""The request log's database: SQLite (a file, the default) or PostgreSQL (a URL).

Both speak the same SQL (``?`` placeholders, ``ON CONFLICT`` upserts, standard types); the
PostgreSQL adapter only rewrites the placeholders. The schema is versioned: a
``triage_schema`` table holds the version, and :data:`MIGRATIONS` are applied in order
at open, under a lock (PostgreSQL: an advisory lock), so replicas starting together
migrate once. A log made before versioning is version 1.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmtriage.data.errors import DataError

#: Each step takes the schema from version i to i + 1.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS requests (
            id TEXT PRIMARY KEY,
            created DOUBLE PRECISION NOT NULL,
            client TEXT,
            policy TEXT NOT NULL,
            session TEXT,
            status INTEGER NOT NULL,
            answered_by TEXT,
            steps TEXT NOT NULL,
            cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
            latency_ms DOUBLE PRECISION,
            tokens_in BIGINT,
            tokens_out BIGINT,
            prompt TEXT,
            answer TEXT,
            error TEXT,
            feedback DOUBLE PRECISION,
            feedback_at DOUBLE PRECISION
        )""",
        "CREATE INDEX IF NOT EXISTS requests_client ON requests (client)",
    ],
    ["CREATE INDEX IF NOT EXISTS requests_created ON requests (created)"],
    # The task a request said it belongs to (x-triage-task), exported for refitting.
    ["ALTER TABLE requests ADD COLUMN task TEXT"],
    # The spend of rows removed by the log's retention, per key: budgets outlive rows.
    ["""CREATE TABLE IF NOT EXISTS spend_carried (
            client TEXT PRIMARY KEY,
            cost_usd DOUBLE PRECISION NOT NULL
        )"""],
]
#: The first schema version whose requests have a task column.
TASK_VERSION = 3


def is_url(target: str | Path) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


class Database(ABC):
    """One connection, used by one thread at a time (the request log's writer)."""

    #: What a failed statement raises.
    errors: tuple[type[Exception], ...]

    def __init__(self, where: str) -> None:
        self.where = where

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement (in the current transaction, if any); its rows."""

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit on success, roll back on error."""

    @abstractmethod
    @contextmanager
    def migration_lock(self) -> Iterator[None]: ...

    @abstractmethod
    def close(self) -> None: ...

    def without_waits(self) -> Database | None:
        """A second connection for commits short enough to make on the event loop: it
        never waits for another writer's lock (it fails at once) and never checkpoints.
        None where every commit is a network round trip (PostgreSQL)."""
        return None

    def checkpoint(self) -> None:
        """Move committed pages from the write-ahead log into the database file (for
        commits made :meth:`without_waits`, which never do it themselves). Nothing to do
        where there is no such connection."""
        return None

    def version(self) -> int:
        """The schema version of an existing log (one made before versioning: 1)."""
        try:
            rows = self.execute("SELECT version FROM triage_schema")
        except self.errors:
            rows = []
        return int(rows[0][0]) if rows else 1

    def migrate(self) -> int:
        """Bring the schema to the latest version; returns it."""
        with self.migration_lock():
            with self.transaction():
                self.execute("CREATE TABLE IF NOT EXISTS triage_schema (version INTEGER "
                             "NOT NULL)")
                rows = self.execute("SELECT version FROM triage_schema")
                if not rows:
                    # A log from before versioning has the first step's tables already.
                    self.execute("INSERT INTO triage_schema (version) VALUES (0)")
                version = rows[0][0] if rows else 0
            for step in range(version, len(MIGRATIONS)):
                with self.transaction():
                    for statement in MIGRATIONS[step]:
                        self.execute(statement)
                    self.execute("UPDATE triage_schema SET version = ?", (step + 1,))
        return len(MIGRATIONS)


class SqliteDatabase(Database):
    errors = (sqlite3.Error,)

    def __init__(self, path: Path, readonly: bool = False, waits: bool = True) -> None:
        super().__init__(str(path))
        self.path = path
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False,
                                      timeout=2.0 if waits else 0.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # Commits reach the write-ahead log without an fsync (the log survives a
            # crash of the process, not of the machine); checkpoints do sync.
            self.db.execute("PRAGMA synchronous=NORMAL")
            if not waits:
                self.db.execute("PRAGMA wal_autocheckpoint=0")

    def without_waits(self) -> SqliteDatabase:
        return SqliteDatabase(self.path, waits=False)

    def checkpoint(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.db.execute(sql, tuple(params)).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # a failed COMMIT leaves it open too
                self.db.execute("ROLLBACK")
            raise

    @contextmanager
    def migration_lock(self) -> Iterator[None]:
        yield  # BEGIN IMMEDIATE already serialises writers of one file

    def close(self) -> None:
        self.db.close()


class PostgresDatabase(Database):
    def __init__(self, url: str) -> None:
        import psycopg

        super().__init__(url.split("@")[-1])  # never the password
        self.url = url
        self.errors = (psycopg.Error,)
        self.db = psycopg.connect(url, autocommit=True, connect_timeout=5)

    def _connection(self) -> Any:
        if self.db.closed or self.db.broken:  # the server went away and came back
            import psycopg

            self.db = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        return self.db

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cursor = self._connection().execute(self._sql(sql), tuple(params))
        return cursor.fetchall() if cursor.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._connection().cursor() as cursor:
            cursor.executemany(self._sql(sql), rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._connection().transaction():
            yield

    @contextmanager
    def migration_lock(self) -> Iterator[None]:
        self.execute("SELECT pg_advisory_lock(7420417)")
        try:
            yield
        finally:
            self.execute("SELECT pg_advisory_unlock(7420417)")

    def close(self) -> None:
        self.db.close()


def open_database(target: str | Path, readonly: bool = False) -> Database:
    """The request log at ``target`` (a SQLite file or a postgresql:// URL), migrated to
    the latest schema unless opened read-only."""
    try:
        if is_url(target):
            db: Database = PostgresDatabase(str(target))
        else:
            path = Path(target)
            if readonly and not path.is_file():
                raise DataError(f"request log {path}: no such file")
            db = SqliteDatabase(path, readonly)
        if not readonly:
            db.migrate()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - sqlite3, psycopg and OS errors alike
        where = str(target).split("@")[-1]
        raise DataError(f"request log {where}: cannot open: {type(exc).__name__}: "
                        f"{exc}") from None
    return db
