"""The webhook delivery log on SQLite: `webhook_deliveries.sqlite3` in the data dir.

Fixed table names (`webhook_deliveries_rows`, `_attempts`, `_health`, `_notices`, beside the
library's unused `tracking`). Every write begins `BEGIN IMMEDIATE`: it holds SQLite's write
lock from the start, so a claim's read of what is due and its leasing of it cannot interleave
with another process's claim.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from projections.model_copies import SQLiteModelCopy
from projections.sqlite_rows import select_in
from projections.webhook_deliveries import (
    ATTEMPT_COLUMN_LIST,
    DELIVERY_COLUMN_LIST,
    NAME,
    NOTICE_COLUMN_LIST,
    Attempt,
    Delivery,
    DeliveryStatus,
    ExpiryNotice,
    NewDelivery,
    attempt_of,
    attempt_values,
    by_claim_order,
    delivery_of,
    group_attempts,
    notice_of,
    outcome_values,
    zero_counts,
)

_PENDING = DeliveryStatus.PENDING.value
_SETTLED = (DeliveryStatus.SUCCEEDED.value, DeliveryStatus.FAILED.value)


def _new_row(d: NewDelivery) -> tuple[Any, ...]:
    endpoint, org = str(d.endpoint_id), str(d.org_id)
    times = (d.created_at, d.next_attempt_at, d.give_up_at)
    return (d.id, endpoint, org, d.msg_id, d.event_type, d.payload, *times, _PENDING)


def _attempt_row(a: Attempt) -> tuple[Any, ...]:
    return (a.delivery_id, a.number, a.at, a.status_code, a.duration_ms, a.error, a.excerpt)


class SQLiteDeliveryLog(SQLiteModelCopy):
    """The delivery log in its own SQLite file (so fixed table names)."""

    name = NAME
    prefix = NAME

    def construct_create_table_statements(self) -> list[str]:
        t = self.prefix
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {t}_rows (id TEXT PRIMARY KEY, "
            "endpoint_id TEXT NOT NULL, org_id TEXT NOT NULL, msg_id TEXT NOT NULL, "
            "event_type TEXT NOT NULL, payload BLOB NOT NULL, created_at REAL NOT NULL, "
            "next_attempt_at REAL, give_up_at REAL NOT NULL, status TEXT NOT NULL, "
            "attempts INTEGER NOT NULL DEFAULT 0, last_attempt_at REAL, "
            "last_status_code INTEGER, last_error TEXT, leased_until REAL)",
            # Claims look for pending rows by due time.
            f"CREATE INDEX IF NOT EXISTS {t}_rows_due ON {t}_rows (status, next_attempt_at)",
            # Listings page an endpoint's rows newest first.
            f"CREATE INDEX IF NOT EXISTS {t}_rows_endpoint "
            f"ON {t}_rows (endpoint_id, created_at, id)",
            # Claims ask whether an endpoint has a row leased; few rows are at any time.
            f"CREATE INDEX IF NOT EXISTS {t}_rows_leased ON {t}_rows (endpoint_id, leased_until) "
            "WHERE leased_until IS NOT NULL",
            f"CREATE TABLE IF NOT EXISTS {t}_attempts (delivery_id TEXT NOT NULL, "
            "number INTEGER NOT NULL, at REAL NOT NULL, status_code INTEGER, "
            "duration_ms REAL NOT NULL, error TEXT, excerpt TEXT NOT NULL, "
            "PRIMARY KEY (delivery_id, number)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {t}_health (endpoint_id TEXT PRIMARY KEY, "
            "failing_since REAL, last_success_at REAL) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {t}_notices (key_id TEXT NOT NULL, "
            "kind TEXT NOT NULL, org_id TEXT NOT NULL, due_at REAL NOT NULL, "
            "expires_at REAL NOT NULL, PRIMARY KEY (key_id, kind))",
            f"CREATE INDEX IF NOT EXISTS {t}_notices_due ON {t}_notices (due_at)",
            f"CREATE TABLE IF NOT EXISTS {t}_told (key_id TEXT PRIMARY KEY, "
            "at REAL NOT NULL) WITHOUT ROWID",
        ]

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        """A write transaction holding the write lock from its start (a raw sqlite3 cursor)."""
        with self.datastore.get_connection(commit=True) as conn, conn.cursor() as cursor:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        """A read transaction (one snapshot: WAL), as a raw sqlite3 cursor."""
        with self.datastore.transaction(commit=False) as c:
            yield c.sqlite_cursor

    def enqueue(self, deliveries: Sequence[NewDelivery]) -> int:
        """Insert the deliveries whose ids are new; how many were."""
        if not deliveries:
            return 0
        with self._writing() as c:
            c.executemany(
                f"INSERT INTO {self.prefix}_rows (id, endpoint_id, org_id, msg_id, event_type, "
                "payload, created_at, next_attempt_at, give_up_at, status, attempts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (id) DO NOTHING",
                [_new_row(d) for d in deliveries],
            )
            # executemany's rowcount sums the rows each insert added (none for a known id).
            return int(c.rowcount)

    def claim_due(self, now: float, *, lease: float, limit: int) -> list[Delivery]:
        """Lease up to `limit` due deliveries, earliest first, one per endpoint and none of an
        endpoint that has one leased already."""
        t = self.prefix
        with self._writing() as c:
            c.execute(
                "SELECT id FROM (SELECT id, next_attempt_at, created_at, row_number() OVER "
                "(PARTITION BY endpoint_id ORDER BY next_attempt_at, created_at, id) AS place "
                f"FROM {t}_rows AS d WHERE status = ? AND next_attempt_at <= ? AND NOT EXISTS "
                f"(SELECT 1 FROM {t}_rows AS busy WHERE busy.endpoint_id = d.endpoint_id "
                "AND busy.leased_until > ? AND busy.status = ?)) "
                "WHERE place = 1 ORDER BY next_attempt_at, created_at, id LIMIT ?",
                (_PENDING, now, now, _PENDING, limit),
            )
            ids = [r[0] for r in c.fetchall()]
            c.execute(
                f"UPDATE {t}_rows SET leased_until = ? "
                f"WHERE id IN (SELECT value FROM json_each(?)) RETURNING {DELIVERY_COLUMN_LIST}",
                (now + lease, json.dumps(ids)),
            )
            claimed = [delivery_of(r) for r in c.fetchall()]
        return by_claim_order(claimed)

    def record_attempt(
        self, attempt: Attempt, *, status: DeliveryStatus, next_attempt_at: float | None
    ) -> None:
        """Record an attempt, move its delivery on (releasing the lease), track the endpoint's
        health; nothing if that attempt number was recorded before."""
        t = self.prefix
        a = attempt
        with self._writing() as c:
            c.execute(
                f"INSERT INTO {t}_attempts ({ATTEMPT_COLUMN_LIST}) "
                f"SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM {t}_rows WHERE id = ?) "
                "ON CONFLICT DO NOTHING",
                (*attempt_values(a), a.delivery_id),
            )
            if c.rowcount != 1:
                return  # recorded before (or no such delivery)
            # A late attempt (a newer one is recorded) is kept but moves nothing on.
            c.execute(
                f"UPDATE {t}_rows SET status = ?, attempts = ?, last_attempt_at = ?, "
                "last_status_code = ?, last_error = ?, next_attempt_at = ?, leased_until = NULL "
                "WHERE id = ? AND attempts < ? RETURNING endpoint_id",
                (*outcome_values(a, status, next_attempt_at), a.delivery_id, a.number),
            )
            row = c.fetchone()
            if row is None:
                return
            if status is DeliveryStatus.SUCCEEDED:
                c.execute(
                    f"INSERT INTO {t}_health (endpoint_id, failing_since, last_success_at) "
                    "VALUES (?, NULL, ?) ON CONFLICT (endpoint_id) DO UPDATE SET "
                    "failing_since = NULL, last_success_at = "
                    "max(coalesce(last_success_at, excluded.last_success_at), "
                    "excluded.last_success_at)",
                    (row[0], a.at),
                )
            else:
                c.execute(
                    f"INSERT INTO {t}_health (endpoint_id, failing_since, last_success_at) "
                    "VALUES (?, ?, NULL) ON CONFLICT (endpoint_id) DO UPDATE SET "
                    "failing_since = coalesce(failing_since, excluded.failing_since)",
                    (row[0], a.at),
                )

    def failing_since(self, endpoint_id: UUID) -> float | None:
        """When the endpoint's current run of failures began (None: not failing)."""
        with self._reading() as c:
            c.execute(
                f"SELECT failing_since FROM {self.prefix}_health WHERE endpoint_id = ?",
                (str(endpoint_id),),
            )
            row = c.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def last_told(self, key_id: UUID) -> float | None:
        """When the key's rate limiting was last told (None: never)."""
        with self._reading() as c:
            c.execute(f"SELECT at FROM {self.prefix}_told WHERE key_id = ?", (str(key_id),))
            row = c.fetchone()
        return None if row is None else float(row[0])

    def set_told(self, key_id: UUID, at: float) -> None:
        """Remember that the key's rate limiting was told at `at` (a later time wins)."""
        with self._writing() as c:
            c.execute(
                f"INSERT INTO {self.prefix}_told (key_id, at) VALUES (?, ?) "
                "ON CONFLICT (key_id) DO UPDATE SET at = max(at, excluded.at)",
                (str(key_id), at),
            )

    def forget_endpoint_health(self, endpoint_id: UUID) -> None:
        """Forget the endpoint's run of failures (it was re-enabled)."""
        with self._writing() as c:
            c.execute(
                f"UPDATE {self.prefix}_health SET failing_since = NULL WHERE endpoint_id = ?",
                (str(endpoint_id),),
            )

    def retry(self, delivery_id: str, now: float, *, give_up_at: float) -> bool:
        """Make the delivery pending and due now, until `give_up_at`; False if there is none."""
        with self._writing() as c:
            # A lease still running means an attempt is in flight: it keeps its endpoint's
            # one slot until it is recorded (or the lease passes).
            c.execute(
                f"UPDATE {self.prefix}_rows SET status = ?, next_attempt_at = ?, "
                "give_up_at = ?, leased_until = "
                "CASE WHEN leased_until > ? THEN leased_until END WHERE id = ?",
                (_PENDING, now, give_up_at, now, delivery_id),
            )
            return bool(c.rowcount == 1)

    def get(self, delivery_id: str) -> Delivery | None:
        """The delivery, or None."""
        with self._reading() as c:
            c.execute(
                f"SELECT {DELIVERY_COLUMN_LIST} FROM {self.prefix}_rows WHERE id = ?",
                (delivery_id,),
            )
            row = c.fetchone()
        return None if row is None else delivery_of(row)

    def deliveries(
        self,
        endpoint_id: UUID,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        status: DeliveryStatus | None = None,
    ) -> list[Delivery]:
        """A page of the endpoint's deliveries, newest first, after the cursor (created_at, id)."""
        where: list[str] = ["endpoint_id = ?"]
        params: list[Any] = [str(endpoint_id)]
        if before is not None:
            where.append("(created_at, id) < (?, ?)")
            params.extend(before)
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        with self._reading() as c:
            c.execute(
                f"SELECT {DELIVERY_COLUMN_LIST} FROM {self.prefix}_rows "
                f"WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?",
                [*params, limit],
            )
            return [delivery_of(r) for r in c.fetchall()]

    def attempts(self, delivery_ids: Sequence[str]) -> dict[str, list[Attempt]]:
        """Each of the deliveries' attempts, oldest first (every id present, maybe empty)."""
        ids = list(dict.fromkeys(delivery_ids))
        with self._reading() as c:
            rows = select_in(
                c,
                f"SELECT {ATTEMPT_COLUMN_LIST} FROM {self.prefix}_attempts "
                "WHERE delivery_id IN ({})",
                ids,
            )
        return group_attempts(ids, [attempt_of(r) for r in rows])

    def counts(self, endpoint_ids: Sequence[UUID]) -> dict[UUID, dict[str, int]]:
        """Deliveries per status for each endpoint (every endpoint present, zeros for none)."""
        found = zero_counts(endpoint_ids)
        wanted = {str(e): e for e in endpoint_ids}
        with self._reading() as c:
            rows = select_in(
                c,
                f"SELECT endpoint_id, status, count(*) FROM {self.prefix}_rows "
                "WHERE endpoint_id IN ({}) GROUP BY endpoint_id, status",
                list(wanted),
            )
        for endpoint, status, count in rows:
            found[wanted[endpoint]][status] = int(count)
        return found

    def schedule_notices(
        self, key_id: UUID, org_id: UUID, expires_at: float, notices: Sequence[tuple[str, float]]
    ) -> None:
        """Replace the key's expiry notices with these (kind, due_at)."""
        t = self.prefix
        with self._writing() as c:
            c.execute(f"DELETE FROM {t}_notices WHERE key_id = ?", (str(key_id),))
            c.executemany(
                f"INSERT OR REPLACE INTO {t}_notices ({NOTICE_COLUMN_LIST}) VALUES (?, ?, ?, ?, ?)",
                [(str(key_id), str(org_id), kind, due, expires_at) for kind, due in notices],
            )

    def cancel_notices(self, key_id: UUID) -> None:
        """Remove the key's expiry notices."""
        with self._writing() as c:
            c.execute(f"DELETE FROM {self.prefix}_notices WHERE key_id = ?", (str(key_id),))

    def due_notices(self, now: float, limit: int) -> list[ExpiryNotice]:
        """Up to `limit` notices due by `now`, earliest first."""
        with self._reading() as c:
            c.execute(
                f"SELECT {NOTICE_COLUMN_LIST} FROM {self.prefix}_notices WHERE due_at <= ? "
                "ORDER BY due_at, key_id, kind LIMIT ?",
                (now, limit),
            )
            return [notice_of(r) for r in c.fetchall()]

    def drop_notice(self, notice: ExpiryNotice) -> None:
        """Remove exactly this notice (not one rescheduled for another expiry meanwhile)."""
        with self._writing() as c:
            c.execute(
                f"DELETE FROM {self.prefix}_notices "
                "WHERE key_id = ? AND kind = ? AND expires_at = ?",
                (str(notice.key_id), notice.kind, notice.expires_at),
            )

    def prune(self, before: float) -> int:
        """Delete succeeded and failed deliveries created before `before`, and their attempts."""
        t = self.prefix
        old = f"SELECT id FROM {t}_rows WHERE status IN (?, ?) AND created_at < ?"
        with self._writing() as c:
            c.execute(f"DELETE FROM {t}_attempts WHERE delivery_id IN ({old})", (*_SETTLED, before))
            c.execute(f"DELETE FROM {t}_rows WHERE id IN ({old})", (*_SETTLED, before))
            return int(c.rowcount)
