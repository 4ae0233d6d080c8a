"""Which `eventsourcing` persistence module the registry uses: SQLite or PostgreSQL."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg_pool import ConnectionPool

from adapters.data_dir_lock import data_dir_lock
from adapters.postgres_pools import CHECKED_POSTGRES_FACTORY, checked_pool
from adapters.private_files import private_sqlite
from adapters.settings import Settings, SettingsError


def event_store_env(settings: Settings, sqlite_file: str = "events.sqlite3") -> dict[str, str]:
    """The `eventsourcing` environment for these settings (`sqlite_file` in the data dir)."""
    if settings.database_url is None:
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(private_sqlite(settings.data_dir / sqlite_file)),
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    url = urlsplit(settings.database_url)
    if url.scheme not in ("postgres", "postgresql", "postgresql+psycopg"):
        raise SettingsError("ICODRIP_DATABASE_URL must be a postgresql:// URL")
    return {
        # `eventsourcing.postgres`, its pools checked so a server restart costs no request.
        "PERSISTENCE_MODULE": CHECKED_POSTGRES_FACTORY,
        "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_LOCK_TIMEOUT": "5",
        # Each store (registry, views, generations, users, …) has a pool of its own: opening
        # five connections apiece made an API process hold ~17 and the worker ~36 at rest, and
        # four API workers beside one worker exhausted PostgreSQL's default 100. One each
        # at rest; they grow to 15 under load and shrink back when idle.
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "14",
    }


def postgres_connect_kwargs(settings: Settings) -> dict[str, Any]:
    """`psycopg.connect` arguments for a connection of its own to the event store's database."""
    env = event_store_env(settings)
    return {
        "dbname": env["POSTGRES_DBNAME"],
        "host": env["POSTGRES_HOST"],
        "port": int(env["POSTGRES_PORT"]),
        "user": env["POSTGRES_USER"],
        "password": env["POSTGRES_PASSWORD"] or None,
        "connect_timeout": int(env["POSTGRES_CONNECT_TIMEOUT"]),
    }


# One number for every icodrip table: schema creation is rare and quick, so one lock suffices.
_SCHEMA_LOCK = zlib.crc32(b"icodrip-keys schema") & 0x7FFFFFFF


@contextmanager
def schema_lock(settings: Settings) -> Iterator[None]:
    """Serialize the opening (table creation) of stores across processes.

    On PostgreSQL two processes creating the same table at once can fail with a duplicate
    `pg_type` row: a session advisory lock held while the stores open lets the second one find
    the tables made. On the embedded default, the data dir's lock file (ADR 0014).
    """
    if settings.is_embedded:
        with data_dir_lock(settings.data_dir):
            yield
        return
    try:
        connection = psycopg.connect(**postgres_connect_kwargs(settings), autocommit=True)
    except psycopg.OperationalError:
        # Unreachable: the store's own open reports it, with the error callers already handle.
        yield
        return
    with connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        try:
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))


def store_pool(url: str) -> ConnectionPool:
    """A pool for the small PostgreSQL stores beside the event store (affiliates, events).

    Waits at most 5 s for a connection, so an outage becomes a quick 503, not a long hang;
    connections are checked before use (`adapters.postgres_pools`), so a restart costs none.
    """
    return checked_pool(
        url, min_size=1, max_size=10, open=True, timeout=5.0, kwargs={"connect_timeout": 5}
    )
