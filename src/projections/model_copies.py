"""Opening a copy of a read model kept in its own tracking recorder, on the settings' backend.

The SQLite copy is a file of its own in the data dir (`configure(name, path)` tells it which);
the PostgreSQL copy is a set of tables named after the copy (`name`). Another name opens
another copy (a rebuild's generation, a replay's scratch copy).
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from adapters.event_store import event_store_env, schema_lock
from adapters.settings import Settings


def open_model_copy(
    settings: Settings, name: str, *, sqlite: type[Any], postgres: type[Any], pool_size: int
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
