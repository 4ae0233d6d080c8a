"""The webhook delivery log on PostgreSQL: `PostgresDeliveryLog`.

Tables `webhook_deliveries_rows`, `_attempts`, `_health` and `_notices` beside the library's
unused `webhook_deliveries_tracking`. A claim leases rows with `FOR UPDATE SKIP LOCKED` in a
CTE feeding `UPDATE … RETURNING`, under an advisory lock per log: claims are then taken one
after another, each seeing the leases of the ones before, which `SKIP LOCKED` alone does not
give (two claimers reading an endpoint at different moments could pick two of its rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composable, Composed, Identifier

from projections.model_copies import PostgresModelCopy
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
_SETTLED = [DeliveryStatus.SUCCEEDED.value, DeliveryStatus.FAILED.value]
_RETURNED = ", ".join(f"d.{column}" for column in DELIVERY_COLUMN_LIST.split(", "))


class PostgresDeliveryLog(PostgresModelCopy):
    """The delivery log as `<prefix>_rows`, `_attempts`, `_health`, `_notices`."""

    name = NAME

    def __init__(self, datastore: Any, *, tracking_table_name: str, **kwargs: Any) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)
        self.rows = self.table("rows")
        self.attempts_table = self.table("attempts")
        self.health = self.table("health")
        self.notices = self.table("notices")
        self.told = self.table("told")
        p = self.prefix
        # Delivery ids in "C" collation: byte order, as on SQLite, for the same tie-breaks.
        self.sql_create_statements.extend(
            [
                SQL(
                    'CREATE TABLE IF NOT EXISTS {0} (id text COLLATE "C" PRIMARY KEY, '
                    "endpoint_id uuid NOT NULL, org_id uuid NOT NULL, msg_id text NOT NULL, "
                    "event_type text NOT NULL, payload bytea NOT NULL, "
                    "created_at double precision NOT NULL, next_attempt_at double precision, "
                    "give_up_at double precision NOT NULL, status text NOT NULL, "
                    "attempts integer NOT NULL DEFAULT 0, last_attempt_at double precision, "
                    "last_status_code integer, last_error text, leased_until double precision)"
                ).format(self.rows),
                # Claims look for pending rows by due time.
                SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (status, next_attempt_at)").format(
                    Identifier(f"{p}_rows_due"), self.rows
                ),
                # Listings page an endpoint's rows newest first.
                SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (endpoint_id, created_at, id)").format(
                    Identifier(f"{p}_rows_endpoint"), self.rows
                ),
                # Claims ask whether an endpoint has a row leased; few rows are at any time.
                SQL(
                    "CREATE INDEX IF NOT EXISTS {0} ON {1} (endpoint_id, leased_until) "
                    "WHERE leased_until IS NOT NULL"
                ).format(Identifier(f"{p}_rows_leased"), self.rows),
                SQL(
                    'CREATE TABLE IF NOT EXISTS {0} (delivery_id text COLLATE "C" NOT NULL, '
                    "number integer NOT NULL, at double precision NOT NULL, "
                    "status_code integer, duration_ms double precision NOT NULL, error text, "
                    "excerpt text NOT NULL, CONSTRAINT {1} PRIMARY KEY (delivery_id, number))"
                ).format(self.attempts_table, Identifier(f"{p}_attempts_pk")),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (endpoint_id uuid PRIMARY KEY, "
                    "failing_since double precision, last_success_at double precision)"
                ).format(self.health),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (key_id uuid NOT NULL, kind text NOT NULL, "
                    "org_id uuid NOT NULL, due_at double precision NOT NULL, "
                    "expires_at double precision NOT NULL, "
                    "CONSTRAINT {1} PRIMARY KEY (key_id, kind))"
                ).format(self.notices, Identifier(f"{p}_notices_pk")),
                SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (due_at)").format(
                    Identifier(f"{p}_notices_due"), self.notices
                ),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (key_id uuid PRIMARY KEY, "
                    "at double precision NOT NULL)"
                ).format(self.told),
            ]
        )
        self._claim = SQL(
            "WITH firsts AS (SELECT DISTINCT ON (endpoint_id) id, next_attempt_at, created_at "
            "FROM {0} AS d WHERE status = %(pending)s AND next_attempt_at <= %(now)s "
            "AND NOT EXISTS (SELECT 1 FROM {0} AS busy WHERE busy.endpoint_id = d.endpoint_id "
            "AND busy.leased_until > %(now)s AND busy.status = %(pending)s) "
            "ORDER BY endpoint_id, next_attempt_at, created_at, id), "
            # Locked and checked again as they are now: a row leased, retried or recorded
            # since the statement began is skipped or left out.
            "chosen AS (SELECT d.id FROM {0} AS d JOIN firsts AS f ON f.id = d.id "
            "WHERE d.status = %(pending)s AND d.next_attempt_at <= %(now)s "
            "AND (d.leased_until IS NULL OR d.leased_until <= %(now)s) "
            "ORDER BY f.next_attempt_at, f.created_at, f.id LIMIT %(limit)s "
            "FOR UPDATE OF d SKIP LOCKED) "
            "UPDATE {0} AS d SET leased_until = %(until)s FROM chosen WHERE d.id = chosen.id "
            "RETURNING " + _RETURNED
        ).format(self.rows)

    def _lock_claims(self, cur: Any) -> None:
        # One claim at a time per log (see the module's docstring).
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"icodrip-webhooks:{self.prefix}",)
        )

    def _select(self, sql: Composed, params: Sequence[Any]) -> list[Any]:
        with self.datastore.get_connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute(sql, params)
            return list(cur.fetchall())

    def _write(self, sql: Composed, params: Sequence[Any]) -> int:
        """Run one statement in a transaction of its own; the rows it changed."""
        with self.datastore.get_connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute(sql, params)
            return int(cur.rowcount)

    def enqueue(self, deliveries: Sequence[NewDelivery]) -> int:
        """Insert the deliveries whose ids are new; how many were."""
        if not deliveries:
            return 0
        columns = [
            [d.id for d in deliveries],
            [d.endpoint_id for d in deliveries],
            [d.org_id for d in deliveries],
            [d.msg_id for d in deliveries],
            [d.event_type for d in deliveries],
            [d.payload for d in deliveries],
            [d.created_at for d in deliveries],
            [d.next_attempt_at for d in deliveries],
            [d.give_up_at for d in deliveries],
        ]
        return self._write(
            SQL(
                "INSERT INTO {0} (id, endpoint_id, org_id, msg_id, event_type, payload, "
                "created_at, next_attempt_at, give_up_at, status, attempts) "
                "SELECT u.*, %s, 0 FROM unnest(%b::text[], %b::uuid[], %b::uuid[], %b::text[], "
                "%b::text[], %b::bytea[], %b::float8[], %b::float8[], %b::float8[]) AS u "
                "ON CONFLICT (id) DO NOTHING"
            ).format(self.rows),
            [_PENDING, *columns],
        )

    def claim_due(self, now: float, *, lease: float, limit: int) -> list[Delivery]:
        """Lease up to `limit` due deliveries, earliest first, one per endpoint and none of an
        endpoint that has one leased already."""
        with self.datastore.get_connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=tuple_row)
            self._lock_claims(cur)
            cur.execute(
                self._claim,
                {"pending": _PENDING, "now": now, "limit": limit, "until": now + lease},
            )
            claimed = [delivery_of(r) for r in cur.fetchall()]
        return by_claim_order(claimed)

    def record_attempt(
        self, attempt: Attempt, *, status: DeliveryStatus, next_attempt_at: float | None
    ) -> None:
        """Record an attempt, move its delivery on (releasing the lease), track the endpoint's
        health; nothing if that attempt number was recorded before."""
        a = attempt
        with self.datastore.get_connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute(
                SQL(
                    "INSERT INTO {0} (" + ATTEMPT_COLUMN_LIST + ") "
                    "SELECT %s, %s, %s, %s, %s, %s, %s WHERE EXISTS "
                    "(SELECT 1 FROM {1} WHERE id = %s) ON CONFLICT DO NOTHING"
                ).format(self.attempts_table, self.rows),
                (*attempt_values(a), a.delivery_id),
            )
            if cur.rowcount != 1:
                return  # recorded before (or no such delivery)
            # A late attempt (a newer one is recorded) is kept but moves nothing on.
            cur.execute(
                SQL(
                    "UPDATE {0} SET status = %s, attempts = %s, last_attempt_at = %s, "
                    "last_status_code = %s, last_error = %s, next_attempt_at = %s, "
                    "leased_until = NULL WHERE id = %s AND attempts < %s RETURNING endpoint_id"
                ).format(self.rows),
                (*outcome_values(a, status, next_attempt_at), a.delivery_id, a.number),
            )
            row = cur.fetchone()
            if row is None:
                return
            if status is DeliveryStatus.SUCCEEDED:
                sql = SQL(
                    "INSERT INTO {0} AS h (endpoint_id, failing_since, last_success_at) "
                    "VALUES (%s, NULL, %s) ON CONFLICT (endpoint_id) DO UPDATE SET "
                    "failing_since = NULL, "
                    "last_success_at = GREATEST(h.last_success_at, EXCLUDED.last_success_at)"
                )
            else:
                sql = SQL(
                    "INSERT INTO {0} AS h (endpoint_id, failing_since, last_success_at) "
                    "VALUES (%s, %s, NULL) ON CONFLICT (endpoint_id) DO UPDATE SET "
                    "failing_since = COALESCE(h.failing_since, EXCLUDED.failing_since)"
                )
            cur.execute(sql.format(self.health), (row[0], a.at))

    def failing_since(self, endpoint_id: UUID) -> float | None:
        """When the endpoint's current run of failures began (None: not failing)."""
        rows = self._select(
            SQL("SELECT failing_since FROM {0} WHERE endpoint_id = %s").format(self.health),
            (endpoint_id,),
        )
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    def last_told(self, key_id: UUID) -> float | None:
        """When the key's rate limiting was last told (None: never)."""
        rows = self._select(
            SQL("SELECT at FROM {0} WHERE key_id = %s").format(self.told), (key_id,)
        )
        return None if not rows else float(rows[0][0])

    def set_told(self, key_id: UUID, at: float) -> None:
        """Remember that the key's rate limiting was told at `at` (a later time wins)."""
        self._write(
            SQL(
                "INSERT INTO {0} AS t (key_id, at) VALUES (%s, %s) "
                "ON CONFLICT (key_id) DO UPDATE SET at = greatest(t.at, excluded.at)"
            ).format(self.told),
            (key_id, at),
        )

    def forget_endpoint_health(self, endpoint_id: UUID) -> None:
        """Forget the endpoint's run of failures (it was re-enabled)."""
        self._write(
            SQL("UPDATE {0} SET failing_since = NULL WHERE endpoint_id = %s").format(self.health),
            (endpoint_id,),
        )

    def retry(self, delivery_id: str, now: float, *, give_up_at: float) -> bool:
        """Make the delivery pending and due now, until `give_up_at`; False if there is none."""
        # A lease still running means an attempt is in flight: it keeps its endpoint's one
        # slot until it is recorded (or the lease passes).
        changed = self._write(
            SQL(
                "UPDATE {0} SET status = %s, next_attempt_at = %s, give_up_at = %s, "
                "leased_until = CASE WHEN leased_until > %s THEN leased_until END WHERE id = %s"
            ).format(self.rows),
            (_PENDING, now, give_up_at, now, delivery_id),
        )
        return changed == 1

    def get(self, delivery_id: str) -> Delivery | None:
        """The delivery, or None."""
        rows = self._select(
            SQL("SELECT " + DELIVERY_COLUMN_LIST + " FROM {0} WHERE id = %s").format(self.rows),
            (delivery_id,),
        )
        return delivery_of(rows[0]) if rows else None

    def deliveries(
        self,
        endpoint_id: UUID,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        status: DeliveryStatus | None = None,
    ) -> list[Delivery]:
        """A page of the endpoint's deliveries, newest first, after the cursor (created_at, id)."""
        where: list[str] = ["endpoint_id = %s"]
        params: list[Any] = [endpoint_id]
        if before is not None:
            where.append("(created_at, id) < (%s, %s)")
            params.extend(before)
        if status is not None:
            where.append("status = %s")
            params.append(status.value)
        rows = self._select(
            SQL(
                "SELECT " + DELIVERY_COLUMN_LIST + " FROM {0} WHERE " + " AND ".join(where) + " "
                "ORDER BY created_at DESC, id DESC LIMIT %s"
            ).format(self.rows),
            [*params, limit],
        )
        return [delivery_of(r) for r in rows]

    def attempts(self, delivery_ids: Sequence[str]) -> dict[str, list[Attempt]]:
        """Each of the deliveries' attempts, oldest first (every id present, maybe empty)."""
        ids = list(dict.fromkeys(delivery_ids))
        rows = self._select(
            SQL(
                "SELECT " + ATTEMPT_COLUMN_LIST + " FROM {0} WHERE delivery_id = ANY(%s) "
                "ORDER BY delivery_id, number"
            ).format(self.attempts_table),
            (ids,),
        )
        return group_attempts(ids, [attempt_of(r) for r in rows])

    def counts(self, endpoint_ids: Sequence[UUID]) -> dict[UUID, dict[str, int]]:
        """Deliveries per status for each endpoint (every endpoint present, zeros for none)."""
        found = zero_counts(endpoint_ids)
        rows = self._select(
            SQL(
                "SELECT endpoint_id, status, count(*) FROM {0} WHERE endpoint_id = ANY(%s) "
                "GROUP BY endpoint_id, status"
            ).format(self.rows),
            (list(endpoint_ids),),
        )
        for endpoint, status, count in rows:
            found[endpoint][status] = int(count)
        return found

    def schedule_notices(
        self, key_id: UUID, org_id: UUID, expires_at: float, notices: Sequence[tuple[str, float]]
    ) -> None:
        """Replace the key's expiry notices with these (kind, due_at)."""
        kinds = dict(notices)  # one notice per kind, the last given
        with self.datastore.get_connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute(SQL("DELETE FROM {0} WHERE key_id = %s").format(self.notices), (key_id,))
            cur.execute(
                SQL(
                    "INSERT INTO {0} (" + NOTICE_COLUMN_LIST + ") "
                    "SELECT %s, %s, u.kind, u.due_at, %s "
                    "FROM unnest(%s::text[], %s::float8[]) AS u(kind, due_at)"
                ).format(self.notices),
                (key_id, org_id, expires_at, list(kinds), list(kinds.values())),
            )

    def cancel_notices(self, key_id: UUID) -> None:
        """Remove the key's expiry notices."""
        self._write(SQL("DELETE FROM {0} WHERE key_id = %s").format(self.notices), (key_id,))

    def due_notices(self, now: float, limit: int) -> list[ExpiryNotice]:
        """Up to `limit` notices due by `now`, earliest first."""
        rows = self._select(
            SQL(
                "SELECT " + NOTICE_COLUMN_LIST + " FROM {0} WHERE due_at <= %s "
                "ORDER BY due_at, key_id, kind LIMIT %s"
            ).format(self.notices),
            (now, limit),
        )
        return [notice_of(r) for r in rows]

    def drop_notice(self, notice: ExpiryNotice) -> None:
        """Remove exactly this notice (not one rescheduled for another expiry meanwhile)."""
        self._write(
            SQL("DELETE FROM {0} WHERE key_id = %s AND kind = %s AND expires_at = %s").format(
                self.notices
            ),
            (notice.key_id, notice.kind, notice.expires_at),
        )

    def prune(self, before: float) -> int:
        """Delete succeeded and failed deliveries created before `before`, and their attempts."""
        with self.datastore.get_connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute(
                SQL(
                    "WITH gone AS (DELETE FROM {0} WHERE status = ANY(%s) AND created_at < %s "
                    "RETURNING id), _ AS (DELETE FROM {1} WHERE delivery_id IN "
                    "(SELECT id FROM gone)) SELECT count(*) FROM gone"
                ).format(self.rows, self.attempts_table),
                (_SETTLED, before),
            )
            (count,) = cur.fetchone() or (0,)
        return int(count)

    @property
    def tables(self) -> Sequence[Composable]:
        return (self.rows, self.attempts_table, self.health, self.notices, self.told)
