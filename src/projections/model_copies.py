"""Opening a copy of a read model kept in its own tracking recorder, on the settings' backend.

The SQLite copy is a file of its own in the data dir (`configure(name, path)` tells it which);
the PostgreSQL copy is a set of tables named after the copy (`name`). Another name opens
another copy (a rebuild's generation, a replay's scratch copy). `SQLiteModelCopy` and
`PostgresModelCopy` are what such copies share: their names, tables, `drop` and `close`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Composable, Identifier

from adapters.event_store import event_store_env, schema_lock
from adapters.settings import Settings


def open_model_copy(
    settings: Settings,
    name: str,
    *,
    sqlite: type[SQLiteModelCopy],
    postgres: type[PostgresModelCopy],
    pool_size: int,
) -> Any:
    """The copy `name` of a model, as the recorder class of the settings' backend."""
    env = event_store_env(settings, sqlite_file=f"{name.lower()}.sqlite3")
    if not settings.is_embedded:
        env["POSTGRES_POOL_SIZE"] = str(pool_size)
        env["POSTGRES_MAX_OVERFLOW"] = "8"
    factory = InfrastructureFactory.construct(Environment(name, env))
    # Processes started together must not create the model's tables at once (ADR 0014).
    with schema_lock(settings):
        store: Any = factory.tracking_recorder(sqlite if settings.is_embedded else postgres)
    if settings.is_embedded:
        store.configure(name, settings.data_dir / f"{name.lower()}.sqlite3")
    else:
        store.name = name
    return store


class SQLiteModelCopy(SQLiteTrackingRecorder):
    """A copy of a read model in its own SQLite file (one file per copy: fixed table names,
    `<prefix>_…`, beside the library's `tracking`)."""

    name: str
    prefix: str
    path: Path

    def configure(self, name: str, path: Path) -> None:
        """Name the copy and the file it lives in (for `drop`)."""
        self.name = name
        self.path = path

    def drop(self) -> None:
        """Remove the copy (its file)."""
        self.datastore.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        """Close the connection."""
        self.datastore.close()


class PostgresModelCopy(PostgresTrackingRecorder):
    """A copy of a read model as tables `<prefix>_<part>` beside `<prefix>_tracking` (the
    prefix is the copy's name, lower-cased by the library)."""

    name: str

    def __init__(self, datastore: Any, *, tracking_table_name: str, **kwargs: Any) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)
        self.prefix = tracking_table_name.removesuffix("_tracking")

    def table(self, part: str) -> Composable:
        """The copy's table `part`, schema-qualified."""
        return SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(f"{self.prefix}_{part}")
        )

    @property
    def tables(self) -> Sequence[Composable]:
        """The copy's own tables (what `drop` removes besides its position)."""
        raise NotImplementedError

    def drop(self) -> None:
        """Remove the copy (its tables and its position)."""
        with self.datastore.transaction(commit=True) as cur:
            for table in self.tables:
                cur.execute(SQL("DROP TABLE IF EXISTS {0}").format(table))
            cur.execute(
                SQL("DROP TABLE IF EXISTS {0}.{1}").format(
                    Identifier(self.datastore.schema), Identifier(self.tracking_table_name)
                )
            )
        self.close()

    def close(self) -> None:
        """Close the pool."""
        self.datastore.close()
