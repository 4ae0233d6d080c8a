"""Reading SQLite rows by a list of values, within SQLite's cap on bound parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Bound parameters per `IN (...)` (older SQLite builds allow 999 per statement).
SQLITE_CHUNK = 900


def select_in(cursor: Any, sql: str, values: Sequence[Any]) -> list[Any]:
    """The rows of `sql` (whose `{}` stands for the `IN` list's marks) for all of `values`."""
    found: list[Any] = []
    for start in range(0, len(values), SQLITE_CHUNK):
        chunk = values[start : start + SQLITE_CHUNK]
        cursor.execute(sql.format(",".join("?" * len(chunk))), chunk)
        found.extend(cursor.fetchall())
    return found
