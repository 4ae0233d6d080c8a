"""The generation pointers and heartbeats in `projections.sqlite3` (embedded)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from adapters.private_files import private_sqlite
from projections.generations import GenerationStore


class SQLiteGenerationStore(GenerationStore):
    """`projections.sqlite3` in the data dir; one short connection per statement."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _run(self, sql: str, params: Sequence[Any]) -> tuple[list[tuple[Any, ...]], int]:
        with closing(sqlite3.connect(private_sqlite(self.path), timeout=10)) as conn, conn:
            cursor = conn.execute(sql, tuple(params))
            return [tuple(row) for row in cursor.fetchall()], cursor.rowcount
