"""The durable key-lookup view: its rows and its tracking position, written in one transaction.

Built on the `eventsourcing` tracking recorders, so the position is stored exactly as the
library's own projections store theirs; one module per backend (`key_lookup_sqlite`,
`key_lookup_postgres`), the same row shape (`key_lookup_rows`).
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Protocol, cast
from uuid import UUID

from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Identifier

from adapters.event_store import event_store_env, schema_lock
from adapters.settings import Settings
from projections.key_lookup import Changes, KeyLookup, KeyRecord, OrgRecord
from projections.key_lookup_postgres import PostgresKeyLookupView
from projections.key_lookup_sqlite import SQLiteKeyLookupView


class KeyLookupView(Protocol):
    """What the runner, the API's mirror and operators need from the durable view."""

    def write(self, changes: Changes, tracking: Tracking) -> None: ...
    def load(self, application_name: str, into: KeyLookup | None = None) -> KeyLookup: ...
    def find(self, key_hash: str) -> tuple[KeyRecord, OrgRecord | None] | None: ...
    def max_tracking_id(self, application_name: str) -> int | None: ...
    def count(self) -> int: ...
    def expiring(self, application_name: str) -> tuple[int, list[tuple[UUID, float]]]: ...
    def key_states(
        self, application_name: str, key_ids: list[UUID]
    ) -> tuple[int, dict[UUID, bytes]]: ...


def open_named_key_lookup_view(settings: Settings, name: str) -> KeyLookupView:
    """The durable view `name` on the backend the settings name (a new name = a fresh copy).

    The live generation, which follows a rebuild's switch, is
    `projections.live_key_lookup.open_key_lookup_view(settings)`.
    """
    env = event_store_env(settings, sqlite_file=f"{name.lower()}.sqlite3")
    factory = InfrastructureFactory.construct(Environment(name, env))
    view = SQLiteKeyLookupView if settings.is_embedded else PostgresKeyLookupView
    # Processes started together must not create the view's tables at once (ADR 0014).
    with schema_lock(settings):
        return cast(KeyLookupView, factory.tracking_recorder(view))


def close_key_lookup_view(view: KeyLookupView) -> None:
    """Close the view's datastore, if it has one; failing to close is ignored (cleanup paths)."""
    datastore = getattr(view, "datastore", None)
    if datastore is not None:
        with suppress(Exception):
            datastore.close()


def drop_key_lookup_view(settings: Settings, name: str) -> None:
    """Remove the durable key-lookup copy `name` (its file, or its four tables)."""
    if settings.is_embedded:
        base = settings.data_dir / f"{name.lower()}.sqlite3"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{base}{suffix}").unlink(missing_ok=True)
        return
    view = cast(PostgresKeyLookupView, open_named_key_lookup_view(settings, name))
    try:
        tracking = SQL("{0}.{1}").format(
            Identifier(view.datastore.schema), Identifier(view.tracking_table_name)
        )
        with view.datastore.transaction(commit=True) as curs:
            for table in (view.keys_table, view.orgs_table, view.states_table, tracking):
                curs.execute(SQL("DROP TABLE IF EXISTS {0}").format(table))
    finally:
        close_key_lookup_view(view)
