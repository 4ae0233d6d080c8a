"""The affiliates store: the example resource, scoped to an organization and an environment."""

from __future__ import annotations

import base64
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
class Affiliate:
    id: str
    org_id: str
    env: str
    name: str
    email: str | None
    created_at: float
    seq: int


class AffiliateStore(Protocol):
    def add(self, org_id: str, env: str, name: str, email: str | None) -> Affiliate: ...
    def get(self, org_id: str, env: str, affiliate_id: str) -> Affiliate | None: ...
    def page(self, org_id: str, env: str, after: int, limit: int) -> list[Affiliate]: ...
    def close(self) -> None: ...


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"a:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position a cursor stands for; ValueError when it was not made by us."""
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    tag, _, seq = raw.partition(":")
    if tag != "a" or not seq.isdigit():
        raise ValueError("bad cursor")
    return int(seq)


_COLUMNS = "id, org_id, env, name, email, created_at, seq"


def _row(row: Any) -> Affiliate:
    return Affiliate(*row)


class SQLiteAffiliateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS affiliates (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "id TEXT UNIQUE NOT NULL, org_id TEXT NOT NULL, env TEXT NOT NULL, name TEXT NOT NULL, "
            "email TEXT, created_at REAL NOT NULL)"
        )
        self._conn.execute(
            "CREATE INDEX IF NOT EXISTS affiliates_scope ON affiliates (org_id, env, seq)"
        )

    def add(self, org_id: str, env: str, name: str, email: str | None) -> Affiliate:
        affiliate_id = f"aff_{uuid.uuid4().hex}"
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO affiliates (id, org_id, env, name, email, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING " + _COLUMNS,
                (affiliate_id, org_id, env, name, email, time.time()),
            )
            return _row(cur.fetchone())

    def get(self, org_id: str, env: str, affiliate_id: str) -> Affiliate | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT " + _COLUMNS + " FROM affiliates WHERE id = ? AND org_id = ? AND env = ?",
                (affiliate_id, org_id, env),
            ).fetchone()
        return None if row is None else _row(row)

    def page(self, org_id: str, env: str, after: int, limit: int) -> list[Affiliate]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT " + _COLUMNS + " FROM affiliates "
                "WHERE org_id = ? AND env = ? AND seq > ? ORDER BY seq LIMIT ?",
                (org_id, env, after, limit),
            ).fetchall()
        return [_row(r) for r in rows]

    def close(self) -> None:
        self._conn.close()


class PostgresAffiliateStore:
    def __init__(self, url: str) -> None:
        # Fail fast while PostgreSQL is down (psycopg_pool waits 30 s by default): a request
        # gets its 503 within 5 s instead of holding one of the few worker threads.
        self._pool = store_pool(url)
        with self._pool.connection() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS affiliates (seq bigserial PRIMARY KEY, "
                "id text UNIQUE NOT NULL, org_id text NOT NULL, env text NOT NULL, "
                "name text NOT NULL, email text, created_at double precision NOT NULL)"
            )
            conn.execute(
                "CREATE INDEX IF NOT EXISTS affiliates_scope ON affiliates (org_id, env, seq)"
            )

    def add(self, org_id: str, env: str, name: str, email: str | None) -> Affiliate:
        with self._pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO affiliates (id, org_id, env, name, email, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING " + _COLUMNS,
                (f"aff_{uuid.uuid4().hex}", org_id, env, name, email, time.time()),
            ).fetchone()
        return _row(row)

    def get(self, org_id: str, env: str, affiliate_id: str) -> Affiliate | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT "
                + _COLUMNS
                + " FROM affiliates WHERE id = %s AND org_id = %s AND env = %s",
                (affiliate_id, org_id, env),
            ).fetchone()
        return None if row is None else _row(row)

    def page(self, org_id: str, env: str, after: int, limit: int) -> list[Affiliate]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT " + _COLUMNS + " FROM affiliates "
                "WHERE org_id = %s AND env = %s AND seq > %s ORDER BY seq LIMIT %s",
                (org_id, env, after, limit),
            ).fetchall()
        return [_row(r) for r in rows]

    def close(self) -> None:
        self._pool.close()


def open_affiliate_store(settings: Settings) -> AffiliateStore:
    if settings.database_url is None:
        return SQLiteAffiliateStore(settings.data_dir / "affiliates.sqlite3")
    with schema_lock(settings):
        return PostgresAffiliateStore(settings.database_url)
