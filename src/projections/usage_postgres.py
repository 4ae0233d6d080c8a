"""The usage store on PostgreSQL: `PostgresUsageStore`.

The model is `<prefix>_counters`, `_seen` and `_meta` beside the library's `<prefix>_tracking`
(prefix = the store's name in lower case, `usage` by default). A write holds an advisory lock
per copy of the model for its transaction: the latency sketches are merged by reading the
stored buckets and writing them back, which two writers must not do at once (a bucket that
neither finds would be inserted by both, and the second would overwrite the first). Prune takes
the same lock, so that the floor of forgotten ids never moves under a write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg.errors
from eventsourcing.persistence import Tracking
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composable, Composed, Identifier

from adapters.request_events import AUDIT_STREAM
from projections.model_copies import PostgresModelCopy
from projections.request_audit import Message
from projections.request_audit_query import IngestResult
from projections.usage import GRANULARITIES, UsageCounters, fold_usage
from projections.usage_events import DecodedRequests
from projections.usage_org import ORG_WIDE_IDS, org_wide_ids, with_org_totals
from projections.usage_query import (
    CELL_COLUMN_LIST,
    CELL_COLUMNS,
    DEFAULT_NAME,
    EVENT_ID_LENGTH,
    NO_FLOOR,
    TOTAL_AGGREGATE_LIST,
    Floor,
    PruneResult,
    UsageQuery,
    UsageRow,
    WriteResult,
    add_aggregate,
    candidates,
    cell_values,
    cover,
    ingest_messages,
    merge_stored,
    next_floor,
    stream_clock,
)
from projections.usage_retention import UsageRetention

_FLOOR = "seen_floor"
#: The array type of each of `CELL_COLUMNS`, for an upsert of `unnest`ed columns.
_CELL_TYPES = ("text", "integer", "text", "bigint", "text", *["bigint"] * 6, "bytea")


class PostgresUsageStore(PostgresModelCopy):
    """The model as `<prefix>_counters`, `_seen`, `_meta` beside `_tracking`."""

    name = DEFAULT_NAME

    def __init__(self, datastore: Any, *, tracking_table_name: str, **kwargs: Any) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)
        self.counters_table = self.table("counters")
        self.seen_table = self.table("seen")
        self.meta_table = self.table("meta")
        p = self.prefix
        # Key ids and event ids in "C" collation: byte order, as on SQLite and in Python, so
        # cursors and the event-id floor compare the same everywhere.
        self.sql_create_statements.extend(
            [
                SQL(
                    'CREATE TABLE IF NOT EXISTS {0} (org_id text COLLATE "C" NOT NULL, '
                    'span integer NOT NULL, key_id text COLLATE "C" NOT NULL, '
                    "start bigint NOT NULL, env text, requests bigint NOT NULL, "
                    "success bigint NOT NULL, client_errors bigint NOT NULL, "
                    "server_errors bigint NOT NULL, rate_limited bigint NOT NULL, "
                    "refused bigint NOT NULL, latency bytea NOT NULL, "
                    "CONSTRAINT {1} PRIMARY KEY (org_id, span, key_id, start))"
                ).format(self.counters_table, Identifier(f"{p}_counters_pk")),
                SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (span, start)").format(
                    Identifier(f"{p}_counters_age"), self.counters_table
                ),
                SQL(
                    'CREATE TABLE IF NOT EXISTS {0} (event_id text COLLATE "C" PRIMARY KEY, '
                    "stream_seq bigint NOT NULL)"
                ).format(self.seen_table),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (name text PRIMARY KEY, value text NOT NULL)"
                ).format(self.meta_table),
            ]
        )
        self._insert_seen = SQL(
            "INSERT INTO {0} (event_id, stream_seq) SELECT * FROM unnest(%b::text[], %b::bigint[])"
        ).format(self.seen_table)
        self._record_seen = SQL(
            "INSERT INTO {0} (event_id, stream_seq) SELECT * FROM unnest(%b::text[], %b::bigint[]) "
            "ON CONFLICT DO NOTHING RETURNING event_id"
        ).format(self.seen_table)
        self._select_cells = SQL(
            "SELECT " + CELL_COLUMN_LIST + " FROM {0} JOIN "
            "unnest(%b::text[], %b::integer[], %b::text[], %b::bigint[]) "
            "AS b(org_id, span, key_id, start) USING (org_id, span, key_id, start)"
        ).format(self.counters_table)
        # Written back merged (under the lock): the stored values are already in them.
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in CELL_COLUMNS[4:])
        self._upsert_cells = SQL(
            "INSERT INTO {0} (" + CELL_COLUMN_LIST + ") "
            "SELECT * FROM unnest(" + ", ".join(f"%b::{t}[]" for t in _CELL_TYPES) + ") "
            "ON CONFLICT (org_id, span, key_id, start) DO UPDATE SET " + updates
        ).format(self.counters_table)
        self._select_floor = SQL("SELECT value FROM {0} WHERE name = %s").format(self.meta_table)

    def _lock(self, cur: Any) -> None:
        # One writer (or pruner) at a time per copy of the model.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"icodrip-usage:{self.prefix}",))

    def _floor(self, cur: Any) -> Floor:
        row = cur.execute(self._select_floor, (_FLOOR,)).fetchone()
        return NO_FLOOR if row is None else Floor(*msgspec.json.decode(row[0]))

    def _record(self, conn: Any, cur: Any, ids: list[str], seqs: list[int]) -> set[str]:
        """Record the event ids (with their messages' sequences); the ones recorded now (the
        others were counted before)."""
        if not ids:
            return set()
        # Events are rarely delivered twice: insert optimistically (nothing comes back), and
        # ask which ids were new only if the primary key says some were not.
        try:
            with conn.transaction():  # a savepoint
                cur.execute(self._insert_seen, (ids, seqs))
            return set(ids)
        except psycopg.errors.UniqueViolation:
            return {r[0] for r in cur.execute(self._record_seen, (ids, seqs)).fetchall()}

    def ingest(self, messages: Sequence[Message]) -> IngestResult:
        """Count a fetch of stream messages (see `usage_query.ingest_messages`)."""
        return ingest_messages(self, messages)

    def write(self, decoded: DecodedRequests, position: int) -> WriteResult:
        """Count the batch's events not counted before; record `position`, all in one go."""
        with self.datastore.get_connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=tuple_row)
            self._lock(cur)
            tracking_cursor = conn.cursor()
            current = self._max_tracking_id(AUDIT_STREAM, tracking_cursor) or 0
            found = candidates(decoded, self._floor(cur))
            ids = list(found.by_id)
            seqs = [seq for seq, _ in found.by_id.values()]
            recorded = self._record(conn, cur, ids, seqs)
            fresh = [found.by_id[event_id][1] for event_id in ids if event_id in recorded]
            cells = with_org_totals(fold_usage(fresh))
            if cells:
                keys = list(cells)
                cur.execute(
                    self._select_cells,
                    (
                        [k.org_id for k in keys],
                        [k.granularity.seconds for k in keys],
                        [k.key_id for k in keys],
                        [k.start for k in keys],
                    ),
                )
                merge_stored(cells, cur.fetchall())
                values = [cell_values(key, counters) for key, counters in cells.items()]
                cur.execute(
                    self._upsert_cells, [list(column) for column in zip(*values, strict=True)]
                )
            if position > current:
                self._insert_tracking(tracking_cursor, Tracking(AUDIT_STREAM, position))
        counted = len(fresh)
        duplicates = len(ids) - len(recorded) + found.replayed
        return WriteResult(counted, duplicates, max(position, current))

    def position(self) -> int:
        """The last stream sequence written."""
        return self.max_tracking_id(AUDIT_STREAM) or 0

    def _select(self, sql: Composed, params: Sequence[Any]) -> list[Any]:
        with self.datastore.get_connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute(sql, params)
            return list(cur.fetchall())

    def query(self, query: UsageQuery, limit: int) -> list[UsageRow]:
        """A page of the query's buckets, ordered by (key_id, start)."""
        where, params = query.where("%s", array=True)
        rows = self._select(
            SQL(
                "SELECT " + CELL_COLUMN_LIST + " FROM {0} WHERE " + where + " "
                "ORDER BY key_id, start LIMIT %s"
            ).format(self.counters_table),
            [*params, limit],
        )
        return [UsageRow.of(r) for r in rows]

    def totals(
        self,
        org_id: str,
        start: int,
        end: int,
        key_ids: Sequence[str] | None = None,
        env: str | None = None,
    ) -> UsageCounters:
        """The counters of [start, end) (whole minutes), read from the coarsest buckets (the
        organization's own buckets when no key is named: `projections.usage_org`)."""
        ids = org_wide_ids(env) if key_ids is None else key_ids
        total = UsageCounters()
        with self.datastore.get_connection() as conn, conn.transaction():
            # One snapshot for all parts of the range.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur = conn.cursor(row_factory=tuple_row)
            for granularity, lo, hi in cover(start, end):
                part = UsageQuery(org_id, granularity, lo, hi, ids, env)
                where, params = part.where("%s", array=True)
                # Summed and concatenated here: one row per part, however many buckets.
                cur.execute(
                    SQL("SELECT " + TOTAL_AGGREGATE_LIST + " FROM {0} WHERE " + where).format(
                        self.counters_table
                    ),
                    params,
                )
                row = cur.fetchone()
                if row is not None:  # an aggregate: always one row
                    add_aggregate(total, row)
        return total

    def count(self) -> int:
        """How many buckets of keys are stored (all granularities)."""
        rows = self._select(
            SQL("SELECT COUNT(*) FROM {0} WHERE key_id <> ALL(%s)").format(self.counters_table),
            (list(ORG_WIDE_IDS),),
        )
        return int(rows[0][0])

    def prune(
        self, retention: UsageRetention, now: float, acked_through: int | None = None
    ) -> PruneResult:
        """Remove the buckets past their retention and, given the consumer's ack floor, forget
        the event ids that can no longer come back (see `projections.usage_query`)."""
        buckets = forgotten = 0
        with self.datastore.get_connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=tuple_row)
            self._lock(cur)
            for granularity in GRANULARITIES:
                cutoff = retention.cutoff(granularity, now)
                if cutoff is not None:
                    cur.execute(
                        SQL("DELETE FROM {0} WHERE span = %s AND start < %s").format(
                            self.counters_table
                        ),
                        (granularity.seconds, cutoff),
                    )
                    buckets += cur.rowcount
            if acked_through is not None:
                current = self._floor(cur)
                position = self._max_tracking_id(AUDIT_STREAM, conn.cursor()) or 0
                cur.execute(SQL("SELECT max(event_id) FROM {0}").format(self.seen_table))
                (newest,) = cur.fetchone() or (None,)
                clock = stream_clock(newest, now)
                floor = next_floor(current, retention.seen_floor(clock), acked_through, position)
                if floor != current:
                    cur.execute(
                        SQL(
                            "DELETE FROM {0} WHERE event_id < %s AND length(event_id) = %s "
                            "AND stream_seq <= %s"
                        ).format(self.seen_table),
                        (floor.event_id, EVENT_ID_LENGTH, floor.stream_seq),
                    )
                    forgotten = cur.rowcount
                    cur.execute(
                        SQL(
                            "INSERT INTO {0} (name, value) VALUES (%s, %s) "
                            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
                        ).format(self.meta_table),
                        (_FLOOR, msgspec.json.encode(floor).decode()),
                    )
        return PruneResult(buckets, forgotten)

    @property
    def tables(self) -> Sequence[Composable]:
        return (self.counters_table, self.seen_table, self.meta_table)
