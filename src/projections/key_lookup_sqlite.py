"""The key-lookup view in its own SQLite file, with the library's tracking table beside it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteTrackingRecorder

from projections.key_lookup import Changes, KeyLookup, KeyRecord, OrgRecord
from projections.key_lookup_rows import (
    EXPIRING_QUERY,
    KEY_COLUMNS,
    KEYS_QUERY,
    KEYS_QUERY_BY_HASH,
    ORG_COLUMNS,
    ORGS_QUERY,
    ORGS_QUERY_BY_ID,
    key_params,
    key_record,
    org_params,
    org_record,
)
from projections.sqlite_rows import select_in


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
            "CREATE TABLE IF NOT EXISTS lookup_key_states (key_id TEXT PRIMARY KEY, "
            "state BLOB NOT NULL)",
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
                f"INSERT OR REPLACE INTO lookup_keys ({KEY_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [key_params(k) for k in changes.keys.values()],
            )
            c.executemany(
                f"INSERT OR REPLACE INTO lookup_orgs ({ORG_COLUMNS}) VALUES (?, ?, ?)",
                [org_params(o) for o in changes.orgs.values()],
            )
            c.executemany(
                "INSERT OR REPLACE INTO lookup_key_states (key_id, state) VALUES (?, ?)",
                [(k.hex, state) for k, state in changes.states.items() if state is not None],
            )
            c.executemany(
                "DELETE FROM lookup_key_states WHERE key_id = ?",
                [(k.hex,) for k, state in changes.states.items() if state is None],
            )
            self._insert_tracking(c, tracking)

    def load(self, application_name: str, into: KeyLookup | None = None) -> KeyLookup:
        """Every row and the position, into `into` (an empty model) or a new `KeyLookup`."""
        lookup = KeyLookup() if into is None else into
        with self.datastore.transaction(commit=False) as c:
            # Row by row, not fetchall(): a million rows at once would be the process's peak.
            c.execute(ORGS_QUERY.format("lookup_orgs"))
            for row in iter(c.fetchone, None):
                lookup.add_org(org_record(tuple(row)))
            c.execute(KEYS_QUERY.format("lookup_keys"))
            for row in iter(c.fetchone, None):
                lookup.add_key(key_record(tuple(row)))
            lookup.position = self._max_tracking_id(application_name, c) or 0
        return lookup

    def find(self, key_hash: str) -> tuple[KeyRecord, OrgRecord | None] | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(KEYS_QUERY_BY_HASH.format("lookup_keys"), (key_hash,))
            row = c.fetchone()
            if row is None:
                return None
            key = key_record(tuple(row))
            c.execute(ORGS_QUERY_BY_ID.format("lookup_orgs"), (key.org_id.hex,))
            org_row = c.fetchone()
        return key, None if org_row is None else org_record(tuple(org_row))

    def key_states(
        self, application_name: str, key_ids: list[UUID]
    ) -> tuple[int, dict[UUID, bytes]]:
        """The view's position, then the listing's state of each of these keys it holds."""
        with self.datastore.transaction(commit=False) as c:
            position = self._max_tracking_id(application_name, c) or 0
            rows = select_in(
                c,
                "SELECT key_id, state FROM lookup_key_states WHERE key_id IN ({})",
                [key_id.hex for key_id in key_ids],
            )
        return position, {UUID(hex=key_id): bytes(state) for key_id, state in rows}

    def count(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT COUNT(*) FROM lookup_keys")
            return int(c.fetchone()[0])

    def expiring(self, application_name: str) -> tuple[int, list[tuple[UUID, float]]]:
        """The view's position, and each unrevoked key with an expiry (for the expiry worker)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(EXPIRING_QUERY.format("lookup_keys"))
            keys = [(UUID(hex=key_id), float(at)) for key_id, at in c.fetchall()]
            return self._max_tracking_id(application_name, c) or 0, keys
