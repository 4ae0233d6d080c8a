"""Opening a usage store on the backend the settings name.

`open_usage_store` opens the SQLite store when the service runs embedded and the PostgreSQL one
otherwise; another name opens another copy of the model (a rebuild's generation). The protocol
the copies share is `projections.usage_query.UsageStore`.
"""

from __future__ import annotations

from contextlib import suppress
from typing import cast

from adapters.settings import Settings
from projections.model_copies import open_model_copy
from projections.usage_postgres import PostgresUsageStore
from projections.usage_query import DEFAULT_NAME, UsageStore
from projections.usage_sqlite import SQLiteUsageStore


def open_usage_store(
    settings: Settings, name: str = DEFAULT_NAME, *, pool_size: int = 2
) -> UsageStore:
    """The usage model `name` on the backend the settings name (another name = another copy)."""
    store = open_model_copy(
        settings, name, sqlite=SQLiteUsageStore, postgres=PostgresUsageStore, pool_size=pool_size
    )
    return cast(UsageStore, store)


def drop_usage_copy(settings: Settings, name: str) -> None:
    """Remove the durable usage copy `name` (nothing if it does not exist)."""
    store = open_usage_store(settings, name)
    try:
        store.drop()
    finally:
        with suppress(Exception):
            store.close()
