"""The durable key-lookup view: its rows and its tracking position, written in one transaction.

Built on the `eventsourcing` tracking recorders, so the position is stored exactly as the
library's own projections store theirs; one class per backend, the same SQL shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import suppress
from typing import Any, Protocol, cast
from uuid import UUID

from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from adapters.event_store import event_store_env, schema_lock
from adapters.settings import Settings
from projections.key_lookup import Changes, KeyLookup, KeyRecord, OrgRecord

_KEY_COLUMNS = (
    "key_hash, key_id, org_id, env, type, name, hint, permissions, allowed_origins, "
    "expires_at, revoked, allowed_ips, expired"
)

_KEYS_QUERY = "SELECT " + _KEY_COLUMNS + " FROM {0}"
_ORGS_QUERY = "SELECT org_id, plan, rate_limit FROM {0}"
_EXPIRING_QUERY = "SELECT key_id, expires_at FROM {0} WHERE expires_at IS NOT NULL AND NOT revoked"


class KeyLookupView(Protocol):
    """What the runner, the API's mirror and operators need from the durable view."""

    def write(self, changes: Changes, tracking: Tracking) -> None: ...
    def load(self, application_name: str, into: KeyLookup | None = None) -> KeyLookup: ...
    def find(self, key_hash: str) -> tuple[KeyRecord, OrgRecord | None] | None: ...
    def max_tracking_id(self, application_name: str) -> int | None: ...
    def count(self) -> int: ...
    def expiring(self, application_name: str) -> tuple[int, list[tuple[UUID, float]]]: ...


def _key_params(record: KeyRecord) -> tuple[Any, ...]:
    return (
        record.key_hash,
        record.key_id.hex,
        record.org_id.hex,
        record.env,
        record.type,
        record.name,
        record.hint,
        None if record.permissions is None else json.dumps(list(record.permissions)),
        json.dumps(list(record.allowed_origins)),
        record.expires_at,
        bool(record.revoked),
        json.dumps(list(record.allowed_ips)),
        bool(record.expired),
    )


def _key_record(row: Iterable[Any]) -> KeyRecord:
    h, key_id, org_id, env, type_, name, hint, perms, origins, expires_at, revoked, ips, expired = (
        row
    )
    return KeyRecord(
        key_id=UUID(hex=key_id),
        org_id=UUID(hex=org_id),
        key_hash=h,
        env=env,
        type=type_,
        name=name,
        hint=hint,
        permissions=None if perms is None else tuple(json.loads(perms)),
        allowed_origins=tuple(json.loads(origins)),
        expires_at=expires_at,
        revoked=bool(revoked),
        allowed_ips=tuple(json.loads(ips)) if ips else (),
        expired=bool(expired),  # NULL in rows written before the column existed
    )


def _stream(curs: Any, query: Composed) -> Iterator[tuple[Any, ...]]:
    """The rows of `query`, fetched a thousand at a time through a server-side cursor."""
    with curs.connection.cursor(name="key_lookup_load", row_factory=tuple_row) as rows:
        rows.itersize = 1000
        rows.execute(query)
        yield from rows


def _org_record(row: Iterable[Any]) -> OrgRecord:
    org_id, plan, rate_limit = row
    return OrgRecord(UUID(hex=org_id), plan, int(rate_limit))


class SQLiteKeyLookupView(SQLiteTrackingRecorder):
    """The view in its own SQLite file (the library keeps one tracking table per file)."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS lookup_keys (key_hash TEXT PRIMARY KEY, "
            "key_id TEXT NOT NULL UNIQUE, org_id TEXT NOT NULL, env TEXT NOT NULL, "
            "type TEXT NOT NULL, name TEXT NOT NULL, hint TEXT NOT NULL, permissions TEXT, "
            "allowed_origins TEXT NOT NULL, expires_at REAL, revoked INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS lookup_orgs (org_id TEXT PRIMARY KEY, "
            "plan TEXT NOT NULL, rate_limit INTEGER NOT NULL)",
        ]

    def _create_table(self, c: Any) -> None:
        super()._create_table(c)
        c.execute("PRAGMA table_info(lookup_keys)")
        columns = {row[1] for row in c.fetchall()}
        # Views created before per-key IP allowlists lack the column (NULL = from anywhere).
        if "allowed_ips" not in columns:
            c.execute("ALTER TABLE lookup_keys ADD COLUMN allowed_ips TEXT")
        # Views created before expired and revoked keys were told apart (NULL = revoked).
        if "expired" not in columns:
            c.execute("ALTER TABLE lookup_keys ADD COLUMN expired INTEGER")

    def write(self, changes: Changes, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.executemany(
                f"INSERT OR REPLACE INTO lookup_keys ({_KEY_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_key_params(k) for k in changes.keys.values()],
            )
            c.executemany(
                "INSERT OR REPLACE INTO lookup_orgs (org_id, plan, rate_limit) VALUES (?, ?, ?)",
                [(o.org_id.hex, o.plan, o.rate_limit) for o in changes.orgs.values()],
            )
            self._insert_tracking(c, tracking)

    def load(self, application_name: str, into: KeyLookup | None = None) -> KeyLookup:
        """Every row and the position, into `into` (an empty model) or a new `KeyLookup`."""
        lookup = KeyLookup() if into is None else into
        with self.datastore.transaction(commit=False) as c:
            # Row by row, not fetchall(): a million rows at once would be the process's peak.
            c.execute(_ORGS_QUERY.format("lookup_orgs"))
            for row in iter(c.fetchone, None):
                lookup.add_org(_org_record(tuple(row)))
            c.execute(_KEYS_QUERY.format("lookup_keys"))
            for row in iter(c.fetchone, None):
                lookup.add_key(_key_record(tuple(row)))
            lookup.position = self._max_tracking_id(application_name, c) or 0
        return lookup

    def find(self, key_hash: str) -> tuple[KeyRecord, OrgRecord | None] | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT {_KEY_COLUMNS} FROM lookup_keys WHERE key_hash = ?",
                (key_hash,),
            )
            row = c.fetchone()
            if row is None:
                return None
            key = _key_record(tuple(row))
            c.execute(
                "SELECT org_id, plan, rate_limit FROM lookup_orgs WHERE org_id = ?",
                (key.org_id.hex,),
            )
            org_row = c.fetchone()
        return key, None if org_row is None else _org_record(tuple(org_row))

    def count(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT COUNT(*) FROM lookup_keys")
            return int(c.fetchone()[0])

    def expiring(self, application_name: str) -> tuple[int, list[tuple[UUID, float]]]:
        """The view's position, and each unrevoked key with an expiry (for the expiry worker)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(_EXPIRING_QUERY.format("lookup_keys"))
            keys = [(UUID(hex=key_id), float(at)) for key_id, at in c.fetchall()]
            return self._max_tracking_id(application_name, c) or 0, keys


class PostgresKeyLookupView(PostgresTrackingRecorder):
    """The view as `<name>_keys` and `<name>_orgs` beside the library's `<name>_tracking`."""

    def __init__(self, datastore: Any, *, tracking_table_name: str, **kwargs: Any) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)
        prefix = tracking_table_name.removesuffix("_tracking")
        schema = Identifier(self.datastore.schema)
        self.keys_table = SQL("{0}.{1}").format(schema, Identifier(f"{prefix}_keys"))
        self.orgs_table = SQL("{0}.{1}").format(schema, Identifier(f"{prefix}_orgs"))
        self.sql_create_statements.extend(
            [
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (key_hash text PRIMARY KEY, "
                    "key_id text NOT NULL UNIQUE, org_id text NOT NULL, env text NOT NULL, "
                    "type text NOT NULL, name text NOT NULL, hint text NOT NULL, "
                    "permissions text, allowed_origins text NOT NULL, "
                    "expires_at double precision, revoked boolean NOT NULL)"
                ).format(self.keys_table),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (org_id text PRIMARY KEY, "
                    "plan text NOT NULL, rate_limit integer NOT NULL)"
                ).format(self.orgs_table),
                # Views created before per-key IP allowlists (NULL = from anywhere).
                SQL("ALTER TABLE {0} ADD COLUMN IF NOT EXISTS allowed_ips text").format(
                    self.keys_table
                ),
                # Views created before expired and revoked keys were told apart (NULL = revoked).
                SQL("ALTER TABLE {0} ADD COLUMN IF NOT EXISTS expired boolean").format(
                    self.keys_table
                ),
            ]
        )

    def write(self, changes: Changes, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            if changes.keys:
                curs.executemany(
                    SQL(
                        "INSERT INTO {0} (" + _KEY_COLUMNS + ") VALUES "
                        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (key_hash) DO UPDATE SET name = EXCLUDED.name, "
                        "expires_at = EXCLUDED.expires_at, revoked = EXCLUDED.revoked, "
                        "allowed_ips = EXCLUDED.allowed_ips, expired = EXCLUDED.expired"
                    ).format(self.keys_table),
                    [_key_params(k) for k in changes.keys.values()],
                )
            if changes.orgs:
                curs.executemany(
                    SQL(
                        "INSERT INTO {0} (org_id, plan, rate_limit) VALUES (%s, %s, %s) "
                        "ON CONFLICT (org_id) DO UPDATE SET plan = EXCLUDED.plan, "
                        "rate_limit = EXCLUDED.rate_limit"
                    ).format(self.orgs_table),
                    [(o.org_id.hex, o.plan, o.rate_limit) for o in changes.orgs.values()],
                )
            self._insert_tracking(curs, tracking)

    def load(self, application_name: str, into: KeyLookup | None = None) -> KeyLookup:
        """Every row and the position, into `into` (an empty model) or a new `KeyLookup`."""
        lookup = KeyLookup() if into is None else into
        with self.datastore.transaction(commit=False) as curs:
            # Server-side cursors, read in batches: a million rows at once (as dicts) would be
            # the process's peak memory, and the allocator keeps much of a peak.
            for org_row in _stream(curs, SQL(_ORGS_QUERY).format(self.orgs_table)):
                lookup.add_org(_org_record(org_row))
            for key_row in _stream(curs, SQL(_KEYS_QUERY).format(self.keys_table)):
                lookup.add_key(_key_record(key_row))
            lookup.position = self._max_tracking_id(application_name, curs) or 0
        return lookup

    def find(self, key_hash: str) -> tuple[KeyRecord, OrgRecord | None] | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL("SELECT " + _KEY_COLUMNS + " FROM {0} WHERE key_hash = %s").format(
                    self.keys_table
                ),
                (key_hash,),
            )
            row = curs.fetchone()
            if row is None:
                return None
            key = _key_record(row.values())
            curs.execute(
                SQL("SELECT org_id, plan, rate_limit FROM {0} WHERE org_id = %s").format(
                    self.orgs_table
                ),
                (key.org_id.hex,),
            )
            org_row = curs.fetchone()
        return key, None if org_row is None else _org_record(org_row.values())

    def count(self) -> int:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT COUNT(*) AS n FROM {0}").format(self.keys_table))
            row = curs.fetchone()
            return 0 if row is None else int(row["n"])

    def expiring(self, application_name: str) -> tuple[int, list[tuple[UUID, float]]]:
        """The view's position, and each unrevoked key with an expiry (for the expiry worker)."""
        with self.datastore.transaction(commit=False) as curs:
            query = SQL(_EXPIRING_QUERY).format(self.keys_table)
            keys = [(UUID(hex=key_id), float(at)) for key_id, at in _stream(curs, query)]
            return self._max_tracking_id(application_name, curs) or 0, keys


def open_named_key_lookup_view(settings: Settings, name: str) -> KeyLookupView:
    """The durable view `name` on the backend the settings name (a new name = a fresh copy).

    The live generation, which follows a rebuild's switch, is
    `projections.live_key_lookup.open_key_lookup_view(settings)`.
    """
    env = event_store_env(settings, sqlite_file=f"{name.lower()}.sqlite3")
    if settings.is_embedded:
        factory = InfrastructureFactory.construct(Environment(name, env))
        return cast(KeyLookupView, factory.tracking_recorder(SQLiteKeyLookupView))
    factory = InfrastructureFactory.construct(Environment(name, env))
    with schema_lock(settings):
        return cast(KeyLookupView, factory.tracking_recorder(PostgresKeyLookupView))


def close_key_lookup_view(view: KeyLookupView) -> None:
    """Close the view's datastore, if it has one; failing to close is ignored (cleanup paths)."""
    datastore = getattr(view, "datastore", None)
    if datastore is not None:
        with suppress(Exception):
            datastore.close()
