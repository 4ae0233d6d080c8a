"""Opening a request-audit store on the backend the settings name.

`open_request_audit_store` opens the SQLite store when the service runs embedded and the
PostgreSQL one otherwise; another name opens another copy of the model (a rebuild's
generation, a replay's scratch copy). Readers that follow the live copy go through
`projections.request_audit_live`.
"""

from __future__ import annotations

from contextlib import suppress
from typing import cast

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from adapters.event_store import event_store_env, schema_lock
from adapters.settings import Settings
from projections.request_audit_postgres import PostgresRequestAuditStore
from projections.request_audit_query import DEFAULT_NAME, RequestAuditStore
from projections.request_audit_sqlite import SQLiteRequestAuditStore


def open_request_audit_store(
    settings: Settings, name: str = DEFAULT_NAME, *, pool_size: int = 2
) -> RequestAuditStore:
    """The audit model `name` on the backend the settings name (another name = another copy)."""
    env = event_store_env(settings, sqlite_file=f"{name.lower()}.sqlite3")
    if settings.is_embedded:
        path = settings.data_dir / f"{name.lower()}.sqlite3"
        factory = InfrastructureFactory.construct(Environment(name, env))
        # Processes started together must not create the model's tables at once (ADR 0014).
        with schema_lock(settings):
            sqlite_store = cast(
                SQLiteRequestAuditStore, factory.tracking_recorder(SQLiteRequestAuditStore)
            )
        sqlite_store.configure(name, path)
        return cast(RequestAuditStore, sqlite_store)
    env["POSTGRES_POOL_SIZE"] = str(pool_size)
    env["POSTGRES_MAX_OVERFLOW"] = "8"
    factory = InfrastructureFactory.construct(Environment(name, env))
    with schema_lock(settings):
        store = cast(
            PostgresRequestAuditStore, factory.tracking_recorder(PostgresRequestAuditStore)
        )
    store.name = name
    return cast(RequestAuditStore, store)


def drop_audit_copy(settings: Settings, name: str) -> None:
    """Remove the durable audit copy `name` (nothing if it does not exist)."""
    store = open_request_audit_store(settings, name)
    try:
        store.drop()
    finally:
        with suppress(Exception):
            store.close()
