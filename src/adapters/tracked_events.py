"""Tracking events sent by client SDKs with public keys (`POST /v1/events`), per org and env.

SQLite in the data dir on the embedded default, PostgreSQL when ICODRIP_DATABASE_URL is set.
Properties are kept as JSON text, already validated and size-limited by the route.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from adapters.event_store import schema_lock, store_pool
from adapters.settings import Settings


@dataclass(frozen=True, slots=True)
class TrackedEvent:
    id: str
    org_id: str
    env: str
    key_id: str
    name: str
    properties: str  # JSON object
    occurred_at: float
    received_at: float
    seq: int


class TrackedEventStore(Protocol):
    def add(
        self,
        org_id: str,
        env: str,
        key_id: str,
        name: str,
        properties: str,
        occurred_at: float | None,
    ) -> TrackedEvent: ...
    def page(self, org_id: str, env: str, after: int, limit: int) -> list[TrackedEvent]: ...
    def close(self) -> None: ...


_COLUMNS = "id, org_id, env, key_id, name, properties, occurred_at, received_at, seq"


def _row(row: Any) -> TrackedEvent:
    return TrackedEvent(*row)


def _new_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


class SQLiteTrackedEventStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS tracked_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "id TEXT UNIQUE NOT NULL, org_id TEXT NOT NULL, env TEXT NOT NULL, "
            "key_id TEXT NOT NULL, name TEXT NOT NULL, properties TEXT NOT NULL, "
            "occurred_at REAL NOT NULL, received_at REAL NOT NULL)"
        )
        self._conn.execute(
            "CREATE INDEX IF NOT EXISTS tracked_events_scope ON tracked_events (org_id, env, seq)"
        )

    def add(
        self,
        org_id: str,
        env: str,
        key_id: str,
        name: str,
        properties: str,
        occurred_at: float | None,
    ) -> TrackedEvent:
        now = time.time()
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO tracked_events (id, org_id, env, key_id, name, properties, "
                "occurred_at, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING " + _COLUMNS,
                (_new_id(), org_id, env, key_id, name, properties, occurred_at or now, now),
            )
            return _row(cur.fetchone())

    def page(self, org_id: str, env: str, after: int, limit: int) -> list[TrackedEvent]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT " + _COLUMNS + " FROM tracked_events "
                "WHERE org_id = ? AND env = ? AND seq > ? ORDER BY seq LIMIT ?",
                (org_id, env, after, limit),
            ).fetchall()
        return [_row(r) for r in rows]

    def close(self) -> None:
        self._conn.close()


class PostgresTrackedEventStore:
    def __init__(self, url: str) -> None:
        self._pool = store_pool(url)
        with self._pool.connection() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS tracked_events (seq bigserial PRIMARY KEY, "
                "id text UNIQUE NOT NULL, org_id text NOT NULL, env text NOT NULL, "
                "key_id text NOT NULL, name text NOT NULL, properties text NOT NULL, "
                "occurred_at double precision NOT NULL, received_at double precision NOT NULL)"
            )
            conn.execute(
                "CREATE INDEX IF NOT EXISTS tracked_events_scope "
                "ON tracked_events (org_id, env, seq)"
            )

    def add(
        self,
        org_id: str,
        env: str,
        key_id: str,
        name: str,
        properties: str,
        occurred_at: float | None,
    ) -> TrackedEvent:
        now = time.time()
        with self._pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO tracked_events (id, org_id, env, key_id, name, properties, "
                "occurred_at, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "RETURNING " + _COLUMNS,
                (_new_id(), org_id, env, key_id, name, properties, occurred_at or now, now),
            ).fetchone()
        return _row(row)

    def page(self, org_id: str, env: str, after: int, limit: int) -> list[TrackedEvent]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT " + _COLUMNS + " FROM tracked_events "
                "WHERE org_id = %s AND env = %s AND seq > %s ORDER BY seq LIMIT %s",
                (org_id, env, after, limit),
            ).fetchall()
        return [_row(r) for r in rows]

    def close(self) -> None:
        self._pool.close()


def open_tracked_event_store(settings: Settings) -> TrackedEventStore:
    if settings.database_url is None:
        return SQLiteTrackedEventStore(settings.data_dir / "tracked_events.sqlite3")
    with schema_lock(settings):
        return PostgresTrackedEventStore(settings.database_url)
