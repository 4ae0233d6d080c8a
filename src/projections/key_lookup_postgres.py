"""The key-lookup view in PostgreSQL: three tables per generation, and the library's tracking."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

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


def _postgres(query: str) -> SQL:
    """A shared query (`?` placeholders, `{0}` for the table) in psycopg's terms."""
    return SQL(query.replace("?", "%s"))


def _stream(curs: Any, query: Composed) -> Iterator[tuple[Any, ...]]:
    """The rows of `query`, fetched a thousand at a time through a server-side cursor."""
    with curs.connection.cursor(name="key_lookup_load", row_factory=tuple_row) as rows:
        rows.itersize = 1000
        rows.execute(query)
        yield from rows


class PostgresKeyLookupView(PostgresTrackingRecorder):
    """The view as `<name>_keys`, `<name>_orgs` and the listing's `<name>_key_states`, beside
    the library's `<name>_tracking`."""

    def __init__(self, datastore: Any, *, tracking_table_name: str, **kwargs: Any) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)
        prefix = tracking_table_name.removesuffix("_tracking")
        schema = Identifier(self.datastore.schema)
        self.keys_table = SQL("{0}.{1}").format(schema, Identifier(f"{prefix}_keys"))
        self.orgs_table = SQL("{0}.{1}").format(schema, Identifier(f"{prefix}_orgs"))
        self.states_table = SQL("{0}.{1}").format(schema, Identifier(f"{prefix}_key_states"))
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
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (key_id text PRIMARY KEY, state bytea NOT NULL)"
                ).format(self.states_table),
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
                        "INSERT INTO {0} (" + KEY_COLUMNS + ") VALUES "
                        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (key_hash) DO UPDATE SET name = EXCLUDED.name, "
                        "expires_at = EXCLUDED.expires_at, revoked = EXCLUDED.revoked, "
                        "allowed_ips = EXCLUDED.allowed_ips, expired = EXCLUDED.expired"
                    ).format(self.keys_table),
                    [key_params(k) for k in changes.keys.values()],
                )
            if changes.orgs:
                curs.executemany(
                    SQL(
                        "INSERT INTO {0} (" + ORG_COLUMNS + ") VALUES (%s, %s, %s) "
                        "ON CONFLICT (org_id) DO UPDATE SET plan = EXCLUDED.plan, "
                        "rate_limit = EXCLUDED.rate_limit"
                    ).format(self.orgs_table),
                    [org_params(o) for o in changes.orgs.values()],
                )
            kept = [(k.hex, state) for k, state in changes.states.items() if state is not None]
            if kept:
                curs.executemany(
                    SQL(
                        "INSERT INTO {0} (key_id, state) VALUES (%s, %s) "
                        "ON CONFLICT (key_id) DO UPDATE SET state = EXCLUDED.state"
                    ).format(self.states_table),
                    kept,
                )
            dropped = [k.hex for k, state in changes.states.items() if state is None]
            if dropped:
                curs.execute(
                    SQL("DELETE FROM {0} WHERE key_id = ANY(%s)").format(self.states_table),
                    (dropped,),
                )
            self._insert_tracking(curs, tracking)

    def load(self, application_name: str, into: KeyLookup | None = None) -> KeyLookup:
        """Every row and the position, into `into` (an empty model) or a new `KeyLookup`."""
        lookup = KeyLookup() if into is None else into
        with self.datastore.transaction(commit=False) as curs:
            # Server-side cursors, read in batches: a million rows at once (as dicts) would be
            # the process's peak memory, and the allocator keeps much of a peak.
            for org_row in _stream(curs, SQL(ORGS_QUERY).format(self.orgs_table)):
                lookup.add_org(org_record(org_row))
            for key_row in _stream(curs, SQL(KEYS_QUERY).format(self.keys_table)):
                lookup.add_key(key_record(key_row))
            lookup.position = self._max_tracking_id(application_name, curs) or 0
        return lookup

    def find(self, key_hash: str) -> tuple[KeyRecord, OrgRecord | None] | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(_postgres(KEYS_QUERY_BY_HASH).format(self.keys_table), (key_hash,))
            row = curs.fetchone()
            if row is None:
                return None
            key = key_record(row.values())
            curs.execute(_postgres(ORGS_QUERY_BY_ID).format(self.orgs_table), (key.org_id.hex,))
            org_row = curs.fetchone()
        return key, None if org_row is None else org_record(org_row.values())

    def key_states(
        self, application_name: str, key_ids: list[UUID]
    ) -> tuple[int, dict[UUID, bytes]]:
        """The view's position, then the listing's state of each of these keys it holds."""
        with self.datastore.transaction(commit=False) as curs:
            position = self._max_tracking_id(application_name, curs) or 0
            curs.execute(
                SQL("SELECT key_id, state FROM {0} WHERE key_id = ANY(%s)").format(
                    self.states_table
                ),
                ([key_id.hex for key_id in key_ids],),
            )
            rows = curs.fetchall()
        return position, {UUID(hex=row["key_id"]): bytes(row["state"]) for row in rows}

    def count(self) -> int:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT COUNT(*) AS n FROM {0}").format(self.keys_table))
            row = curs.fetchone()
            return 0 if row is None else int(row["n"])

    def expiring(self, application_name: str) -> tuple[int, list[tuple[UUID, float]]]:
        """The view's position, and each unrevoked key with an expiry (for the expiry worker)."""
        with self.datastore.transaction(commit=False) as curs:
            query = SQL(EXPIRING_QUERY).format(self.keys_table)
            keys = [(UUID(hex=key_id), float(at)) for key_id, at in _stream(curs, query)]
            return self._max_tracking_id(application_name, curs) or 0, keys
