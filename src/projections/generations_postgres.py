"""The generation pointers and heartbeats in the store's PostgreSQL database."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import psycopg

from projections.generations import GenerationStore


class PostgresGenerationStore(GenerationStore):
    """The table `icodrip_projections` in the store's database; one connection, reopened on loss."""

    def __init__(self, database_url: str) -> None:
        super().__init__()
        self.database_url = database_url
        self._conn: Any = None
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=5)
        return self._conn

    def _run(self, sql: str, params: Sequence[Any]) -> tuple[list[tuple[Any, ...]], int]:
        statement = sql.replace("?", "%s")
        with self._lock:
            for attempt in (1, 2):
                try:
                    cursor = self._connection().execute(statement, tuple(params))
                    rows = cursor.fetchall() if cursor.description else []
                    return [tuple(r) for r in rows], cursor.rowcount
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    self.close_locked()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def close_locked(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()
