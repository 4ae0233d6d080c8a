"""Opening a request-audit store on the backend the settings name.

`open_request_audit_store` opens the SQLite store when the service runs embedded and the
PostgreSQL one otherwise; another name opens another copy of the model (a rebuild's
generation, a replay's scratch copy). Readers that follow the live copy go through
`projections.request_audit_live`.
"""

from __future__ import annotations

from contextlib import suppress
from typing import cast

from adapters.settings import Settings
from projections.model_copies import open_model_copy
from projections.request_audit_postgres import PostgresRequestAuditStore
from projections.request_audit_query import DEFAULT_NAME, RequestAuditStore
from projections.request_audit_sqlite import SQLiteRequestAuditStore


def open_request_audit_store(
    settings: Settings, name: str = DEFAULT_NAME, *, pool_size: int = 2
) -> RequestAuditStore:
    """The audit model `name` on the backend the settings name (another name = another copy)."""
    store = open_model_copy(
        settings,
        name,
        sqlite=SQLiteRequestAuditStore,
        postgres=PostgresRequestAuditStore,
        pool_size=pool_size,
    )
    return cast(RequestAuditStore, store)


def drop_audit_copy(settings: Settings, name: str) -> None:
    """Remove the durable audit copy `name` (nothing if it does not exist)."""
    store = open_request_audit_store(settings, name)
    try:
        store.drop()
    finally:
        with suppress(Exception):
            store.close()
