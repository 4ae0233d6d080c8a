"""Opening a usage store on the backend the settings name.

`open_usage_store` opens the SQLite store when the service runs embedded and the PostgreSQL one
otherwise; another name opens another copy of the model (a rebuild's generation). The protocol
the copies share is `projections.usage_query.UsageStore`.
"""

from __future__ import annotations

from typing import cast

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from adapters.event_store import event_store_env, schema_lock
from adapters.settings import Settings
from projections.usage_postgres import PostgresUsageStore
from projections.usage_query import DEFAULT_NAME, UsageStore
from projections.usage_sqlite import SQLiteUsageStore


def open_usage_store(
    settings: Settings, name: str = DEFAULT_NAME, *, pool_size: int = 2
) -> UsageStore:
    """The usage model `name` on the backend the settings name (another name = another copy)."""
    env = event_store_env(settings, sqlite_file=f"{name.lower()}.sqlite3")
    if settings.is_embedded:
        path = settings.data_dir / f"{name.lower()}.sqlite3"
        factory = InfrastructureFactory.construct(Environment(name, env))
        # Processes started together must not create the model's tables at once (ADR 0014).
        with schema_lock(settings):
            sqlite_store = cast(SQLiteUsageStore, factory.tracking_recorder(SQLiteUsageStore))
        sqlite_store.configure(name, path)
        return cast(UsageStore, sqlite_store)
    env["POSTGRES_POOL_SIZE"] = str(pool_size)
    env["POSTGRES_MAX_OVERFLOW"] = "8"
    factory = InfrastructureFactory.construct(Environment(name, env))
    with schema_lock(settings):
        store = cast(PostgresUsageStore, factory.tracking_recorder(PostgresUsageStore))
    store.name = name
    return cast(UsageStore, store)
