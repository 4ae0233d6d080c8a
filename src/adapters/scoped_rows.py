"""A small table of rows scoped to an organization and an environment, on SQLite or PostgreSQL.

The affiliates and the tracked events are each one: a row is added with a fresh id and read
back by id or in insertion order (`seq`, for cursor pages), always within one org and env.
SQLite in the data dir on the embedded default, PostgreSQL when ICODRIP_DATABASE_URL is set.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.event_store import schema_lock, store_pool
from adapters.private_files import private_sqlite
from adapters.settings import Settings

#: Above any `seq` either store hands out (PostgreSQL's bigserial): a larger cursor is no cursor.
MAX_SEQ = 2**63 - 1


def encode_cursor(tag: str, seq: int) -> str:
    """An opaque token for the rows after `seq` of the list `tag` names."""
    return base64.urlsafe_b64encode(f"{tag}:{seq}".encode()).decode().rstrip("=")


def decode_cursor(tag: str, cursor: str) -> int:
    """The position a cursor of the list `tag` stands for; ValueError when it is not one
    (another list's cursor included)."""
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    found, _, seq = raw.partition(":")
    if found != tag or not seq.isascii() or not seq.isdigit() or int(seq) > MAX_SEQ:
        raise ValueError("bad cursor")
    return int(seq)


class _SQLite:
    param = "?"
    seq_column = "seq INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            private_sqlite(path), check_same_thread=False, isolation_level=None
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self._conn.close()


class _Postgres:
    param = "%s"
    seq_column = "seq bigserial PRIMARY KEY"

    def __init__(self, url: str) -> None:
        # Fail fast while PostgreSQL is down (psycopg_pool waits 30 s by default): a request
        # gets its 503 within 5 s instead of holding one of the few worker threads.
        self._pool = store_pool(url)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._pool.connection() as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        self._pool.close()


class ScopedRows:
    """One table: `columns` (name, SQL type) with `org_id` and `env` among them, plus `seq`.

    Rows come back as tuples in `columns` order followed by `seq`.
    """

    def __init__(self, settings: Settings, table: str, columns: Sequence[tuple[str, str]]) -> None:
        self.table = table
        self._names = [name for name, _ in columns]
        self._select = ", ".join([*self._names, "seq"])
        # A new SQLite file's switch to WAL fails in the second of two processes doing it at
        # once ("database is locked"), as PostgreSQL's table creation can: one at a time.
        with schema_lock(settings):
            self._db: _SQLite | _Postgres = (
                _SQLite(settings.data_dir / f"{table}.sqlite3")
                if settings.database_url is None
                else _Postgres(settings.database_url)
            )
            self._create(columns)

    def _create(self, columns: Sequence[tuple[str, str]]) -> None:
        definitions = ", ".join(f"{name} {sql_type}" for name, sql_type in columns)
        self._db.query(
            f"CREATE TABLE IF NOT EXISTS {self.table} ({self._db.seq_column}, {definitions})"
        )
        self._db.query(
            f"CREATE INDEX IF NOT EXISTS {self.table}_scope ON {self.table} (org_id, env, seq)"
        )

    def insert(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """Add a row (values in `columns` order); the row as stored."""
        params = ", ".join([self._db.param] * len(values))
        (row,) = self._db.query(
            f"INSERT INTO {self.table} ({', '.join(self._names)}) VALUES ({params}) "
            f"RETURNING {self._select}",
            values,
        )
        return tuple(row)

    def insert_many(self, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """Add several rows in one statement, so all or none are stored; them as stored, in
        the order given (matched by `id`, the first column: RETURNING promises no order)."""
        if not rows:
            return []
        one = f"({', '.join([self._db.param] * len(self._names))})"
        stored = self._db.query(
            f"INSERT INTO {self.table} ({', '.join(self._names)}) "
            f"VALUES {', '.join([one] * len(rows))} RETURNING {self._select}",
            [value for row in rows for value in row],
        )
        by_id = {row[0]: tuple(row) for row in stored}
        return [by_id[row[0]] for row in rows]

    def get(self, org_id: str, env: str, row_id: str) -> tuple[Any, ...] | None:
        p = self._db.param
        rows = self._db.query(
            f"SELECT {self._select} FROM {self.table} "
            f"WHERE id = {p} AND org_id = {p} AND env = {p}",
            (row_id, org_id, env),
        )
        return tuple(rows[0]) if rows else None

    def page(self, org_id: str, env: str, after: int, limit: int) -> list[tuple[Any, ...]]:
        """Up to `limit` rows after position `after`, in insertion order."""
        p = self._db.param
        rows = self._db.query(
            f"SELECT {self._select} FROM {self.table} "
            f"WHERE org_id = {p} AND env = {p} AND seq > {p} ORDER BY seq LIMIT {p}",
            (org_id, env, after, limit),
        )
        return [tuple(row) for row in rows]

    def close(self) -> None:
        self._db.close()
