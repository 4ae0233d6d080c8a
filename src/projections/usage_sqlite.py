"""The usage store on SQLite: the model in its own file, one file per store name.

`SQLiteUsageStore` keeps fixed table names (`usage_counters`, `usage_seen`, `usage_meta`, and
the library's `tracking`). A write holds SQLite's write lock from its first statement, so
reading the stored buckets, merging the batch's into them and writing them back cannot
interleave with another writer's (see `projections.usage_query` for the idempotence rules).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from eventsourcing.persistence import Tracking

from adapters.request_events import AUDIT_STREAM
from projections.model_copies import SQLiteModelCopy
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
    TOTAL_COLUMN_LIST,
    Floor,
    PruneResult,
    UsageQuery,
    UsageRow,
    WriteResult,
    accumulate,
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
_json = msgspec.json.Encoder()


class SQLiteUsageStore(SQLiteModelCopy):
    """The usage model in its own SQLite file (one file per store name, so fixed table names)."""

    name = DEFAULT_NAME
    prefix = "usage"

    def construct_create_table_statements(self) -> list[str]:
        t = self.prefix
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {t}_counters (org_id TEXT NOT NULL, "
            "span INTEGER NOT NULL, key_id TEXT NOT NULL, start INTEGER NOT NULL, env TEXT, "
            "requests INTEGER NOT NULL, success INTEGER NOT NULL, "
            "client_errors INTEGER NOT NULL, server_errors INTEGER NOT NULL, "
            "rate_limited INTEGER NOT NULL, refused INTEGER NOT NULL, latency BLOB NOT NULL, "
            "PRIMARY KEY (org_id, span, key_id, start)) WITHOUT ROWID",
            # `prune` deletes by age across organizations.
            f"CREATE INDEX IF NOT EXISTS {t}_counters_age ON {t}_counters (span, start)",
            f"CREATE TABLE IF NOT EXISTS {t}_seen (event_id TEXT PRIMARY KEY, "
            "stream_seq INTEGER NOT NULL) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {t}_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ]

    def _floor(self, c: Any) -> Floor:
        c.execute(f"SELECT value FROM {self.prefix}_meta WHERE name = ?", (_FLOOR,))
        row = c.fetchone()
        return NO_FLOOR if row is None else Floor(*msgspec.json.decode(row[0]))

    def ingest(self, messages: Sequence[Message]) -> IngestResult:
        """Count a fetch of stream messages (see `usage_query.ingest_messages`)."""
        return ingest_messages(self, messages)

    def write(self, decoded: DecodedRequests, position: int) -> WriteResult:
        """Count the batch's events not counted before; record `position`, all in one go."""
        t = self.prefix
        with self.datastore.transaction(commit=True) as c:
            # A write first, so that the whole transaction holds SQLite's write lock.
            c.execute(f"UPDATE {t}_meta SET value = value WHERE 0")
            current = self._max_tracking_id(AUDIT_STREAM, c) or 0
            found = candidates(decoded, self._floor(c))
            # One statement records the ids and says which were new (RETURNING: SQLite 3.35).
            c.execute(
                f"INSERT INTO {t}_seen (event_id, stream_seq) "
                "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
                "FROM json_each(?) WHERE 1 ON CONFLICT DO NOTHING RETURNING event_id",
                (_json.encode([(i, seq) for i, (seq, _) in found.by_id.items()]),),
            )
            recorded = {r[0] for r in c.fetchall()}
            fresh = [entry for i, (_, entry) in found.by_id.items() if i in recorded]
            cells = with_org_totals(fold_usage(fresh))
            c.execute(
                # The batch's buckets as one JSON parameter; CROSS JOIN: a PK lookup for each.
                f"SELECT {CELL_COLUMN_LIST} FROM json_each(?) AS j CROSS JOIN {t}_counters "
                "ON org_id = json_extract(j.value, '$[0]') "
                "AND span = json_extract(j.value, '$[1]') "
                "AND key_id = json_extract(j.value, '$[2]') "
                "AND start = json_extract(j.value, '$[3]')",
                (
                    _json.encode(
                        [(k.org_id, k.granularity.seconds, k.key_id, k.start) for k in cells]
                    ),
                ),
            )
            stored = c.fetchall()
            merge_stored(cells, stored)
            placeholders = ", ".join("?" * len(CELL_COLUMNS))
            c.executemany(
                f"INSERT OR REPLACE INTO {t}_counters ({CELL_COLUMN_LIST}) VALUES ({placeholders})",
                [cell_values(key, counters) for key, counters in cells.items()],
            )
            if position > current:
                self._insert_tracking(c, Tracking(AUDIT_STREAM, position))
        counted = len(fresh)
        duplicates = len(found.by_id) - len(recorded) + found.replayed
        return WriteResult(counted, duplicates, max(position, current))

    def position(self) -> int:
        """The last stream sequence written."""
        return self.max_tracking_id(AUDIT_STREAM) or 0

    def query(self, query: UsageQuery, limit: int) -> list[UsageRow]:
        """A page of the query's buckets, ordered by (key_id, start)."""
        where, params = query.where("?", array=False)
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT {CELL_COLUMN_LIST} FROM {self.prefix}_counters WHERE {where} "
                "ORDER BY key_id, start LIMIT ?",
                [*params, limit],
            )
            return [UsageRow.of(r) for r in c.fetchall()]

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
        with self.datastore.transaction(commit=False) as c:  # one snapshot (WAL)
            for granularity, lo, hi in cover(start, end):
                part = UsageQuery(org_id, granularity, lo, hi, ids, env)
                where, params = part.where("?", array=False)
                c.execute(
                    f"SELECT {TOTAL_COLUMN_LIST} FROM {self.prefix}_counters WHERE {where}",
                    params,
                )
                accumulate(total, c.sqlite_cursor)
        return total

    def count(self) -> int:
        """How many buckets of keys are stored (all granularities)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT COUNT(*) FROM {self.prefix}_counters WHERE key_id NOT IN (?, ?, ?)",
                ORG_WIDE_IDS,
            )
            return int(c.fetchone()[0])

    def prune(
        self, retention: UsageRetention, now: float, acked_through: int | None = None
    ) -> PruneResult:
        """Remove the buckets past their retention and, given the consumer's ack floor, forget
        the event ids that can no longer come back (see `projections.usage_query`)."""
        t = self.prefix
        buckets = forgotten = 0
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"UPDATE {t}_meta SET value = value WHERE 0")
            for granularity in GRANULARITIES:
                cutoff = retention.cutoff(granularity, now)
                if cutoff is not None:
                    c.execute(
                        f"DELETE FROM {t}_counters WHERE span = ? AND start < ?",
                        (granularity.seconds, cutoff),
                    )
                    buckets += c.sqlite_cursor.rowcount
            if acked_through is not None:
                current = self._floor(c)
                position = self._max_tracking_id(AUDIT_STREAM, c) or 0
                c.execute(f"SELECT max(event_id) FROM {t}_seen")
                clock = stream_clock(c.fetchone()[0], now)
                floor = next_floor(current, retention.seen_floor(clock), acked_through, position)
                if floor != current:
                    c.execute(
                        f"DELETE FROM {t}_seen WHERE event_id < ? AND length(event_id) = ? "
                        "AND stream_seq <= ?",
                        (floor.event_id, EVENT_ID_LENGTH, floor.stream_seq),
                    )
                    forgotten = c.sqlite_cursor.rowcount
                    c.execute(
                        f"INSERT OR REPLACE INTO {t}_meta (name, value) VALUES (?, ?)",
                        (_FLOOR, _json.encode(floor).decode()),
                    )
        return PruneResult(buckets, forgotten)
