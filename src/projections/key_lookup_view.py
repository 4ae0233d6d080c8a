"""The durable key-lookup view: its rows and its tracking position, written in one transaction.

Built on the `eventsourcing` tracking recorders, so the position is stored exactly as the
library's own projections store theirs; one module per backend (`key_lookup_sqlite`,
`key_lookup_postgres`), the same row shape (`key_lookup_rows`).
"""

from __future__ import annotations

from contextlib import suppress
from typing import Protocol, cast
from uuid import UUID

from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.utils import Environment

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
