"""The request-audit store on SQLite: the model in its own file, one file per store name.

`SQLiteRequestAuditStore` keeps fixed table names (`audit_rows`, `audit_heads`,
`audit_last_used`, `audit_rejects`, and the library's `tracking`) and writes an ingest's rows
with `executemany` in one transaction that holds SQLite's write lock throughout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence

from eventsourcing.persistence import Tracking

from adapters.request_events import AUDIT_STREAM
from projections.audit_chain import AuditChainer
from projections.model_copies import SQLiteModelCopy
from projections.request_audit import (
    COLUMNS,
    AuditRow,
    ChainHead,
    LastUsed,
    Message,
    as_columns,
    decode_messages,
    event_ids,
    orgs_of,
)
from projections.request_audit_query import (
    COLUMN_LIST,
    DEFAULT_NAME,
    AuditQuery,
    ChainReport,
    IngestResult,
    K,
    key_text,
    verify_scan,
)
from projections.sqlite_rows import select_in


class SQLiteRequestAuditStore(SQLiteModelCopy):
    """The model in its own SQLite file (one file per store name, so fixed table names)."""

    name = DEFAULT_NAME
    prefix = "audit"

    def construct_create_table_statements(self) -> list[str]:
        t = self.prefix
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {t}_rows (org_id TEXT NOT NULL, seq INTEGER NOT NULL, "
            "event_id TEXT NOT NULL UNIQUE, request_id TEXT NOT NULL, key_id TEXT, "
            "key_hint TEXT, env TEXT, method TEXT NOT NULL, route TEXT NOT NULL, "
            "path TEXT NOT NULL, status INTEGER NOT NULL, client_addr TEXT, user_agent TEXT, "
            "latency_ms REAL NOT NULL, occurred_at REAL NOT NULL, prev_hash TEXT NOT NULL, "
            "row_hash TEXT NOT NULL, stream_seq INTEGER NOT NULL, PRIMARY KEY (org_id, seq))",
            f"CREATE INDEX IF NOT EXISTS {t}_rows_key ON {t}_rows (key_id, seq)",
            f"CREATE INDEX IF NOT EXISTS {t}_rows_time ON {t}_rows (org_id, occurred_at)",
            f"CREATE TABLE IF NOT EXISTS {t}_heads (org_id TEXT PRIMARY KEY, "
            "seq INTEGER NOT NULL, row_hash TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {t}_last_used (key_id TEXT PRIMARY KEY, "
            "last_used_at REAL NOT NULL, last_used_addr TEXT)",
            f"CREATE TABLE IF NOT EXISTS {t}_rejects (stream_seq INTEGER NOT NULL, "
            "item INTEGER NOT NULL, reason TEXT NOT NULL, payload BLOB NOT NULL, "
            "PRIMARY KEY (stream_seq, item, reason))",
        ]

    def ingest(self, messages: Sequence[Message]) -> IngestResult:
        t = self.prefix
        decoded, rejected = decode_messages(messages)
        ids = list(dict.fromkeys(event_ids(decoded)))
        orgs = sorted(orgs_of(decoded))
        with self.datastore.transaction(commit=True) as c:
            # A write first, so that the whole transaction holds SQLite's write lock.
            c.execute(f"UPDATE {t}_heads SET seq = seq WHERE 0")
            known = {
                r[0]
                for r in select_in(
                    c, f"SELECT event_id FROM {t}_rows WHERE event_id IN ({{}})", ids
                )
            }
            heads = {
                r[0]: ChainHead(int(r[1]), r[2])
                for r in select_in(
                    c, f"SELECT org_id, seq, row_hash FROM {t}_heads WHERE org_id IN ({{}})", orgs
                )
            }
            chained = AuditChainer(heads, known).chain(decoded)
            placeholders = ", ".join("?" * len(COLUMNS))
            c.executemany(
                f"INSERT INTO {t}_rows ({COLUMN_LIST}) VALUES ({placeholders})",
                map(as_columns, chained.rows),
            )
            c.executemany(
                f"INSERT OR REPLACE INTO {t}_heads (org_id, seq, row_hash) VALUES (?, ?, ?)",
                [(org, h.seq, h.row_hash) for org, h in chained.heads.items()],
            )
            c.executemany(
                f"INSERT INTO {t}_last_used (key_id, last_used_at, last_used_addr) "
                "VALUES (?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET "
                "last_used_at = excluded.last_used_at, last_used_addr = excluded.last_used_addr "
                f"WHERE excluded.last_used_at > {t}_last_used.last_used_at",
                [(k, u.at, u.addr) for k, u in chained.last_used.items()],
            )
            c.executemany(
                f"INSERT OR IGNORE INTO {t}_rejects (stream_seq, item, reason, payload) "
                "VALUES (?, ?, ?, ?)",
                [(r.stream_seq, r.item, r.reason, r.payload) for r in rejected],
            )
            position = max([chained.position, *(m.stream_seq for m in messages)])
            current = self._max_tracking_id(AUDIT_STREAM, c) or 0
            if position > current:
                self._insert_tracking(c, Tracking(AUDIT_STREAM, position))
        return IngestResult(
            len(chained.rows), chained.duplicates, len(rejected), max(position, current)
        )

    def position(self) -> int:
        return self.max_tracking_id(AUDIT_STREAM) or 0

    def last_used(self, key_ids: Iterable[K]) -> dict[K, LastUsed]:
        wanted = {key_text(k): k for k in key_ids}
        with self.datastore.transaction(commit=False) as c:
            rows = select_in(
                c,
                f"SELECT key_id, last_used_at, last_used_addr FROM {self.prefix}_last_used "
                "WHERE key_id IN ({})",
                list(wanted),
            )
        return {wanted[r[0]]: LastUsed(float(r[1]), r[2]) for r in rows}

    def page(self, query: AuditQuery, limit: int) -> list[AuditRow]:
        where, params = query.where("?")
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT {COLUMN_LIST} FROM {self.prefix}_rows WHERE {where} "
                "ORDER BY seq DESC LIMIT ?",
                [*params, limit],
            )
            return [AuditRow(*r) for r in c.fetchall()]

    def count(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT COUNT(*) FROM {self.prefix}_rows")
            return int(c.fetchone()[0])

    def heads(self) -> dict[str, ChainHead]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT org_id, seq, row_hash FROM {self.prefix}_heads")
            return {r[0]: ChainHead(int(r[1]), r[2]) for r in c.fetchall()}

    def verify(
        self, org_id: str | None = None, progress: Callable[[int], None] | None = None
    ) -> list[ChainReport]:
        t = self.prefix
        with self.datastore.transaction(commit=False) as c:  # one snapshot (WAL)
            c.execute(
                f"SELECT org_id, seq, row_hash FROM {t}_heads"
                + (" WHERE org_id = ?" if org_id else ""),
                [org_id] if org_id else [],
            )
            heads = {r[0]: ChainHead(int(r[1]), r[2]) for r in c.fetchall()}
            c.execute(
                f"SELECT {COLUMN_LIST} FROM {t}_rows"
                + (" WHERE org_id = ?" if org_id else "")
                + " ORDER BY org_id, seq",
                [org_id] if org_id else [],
            )
            return verify_scan(heads, (AuditRow(*r) for r in c.sqlite_cursor), progress)

    @contextlib.contextmanager
    def rows_by_event_id(
        self, max_stream_seq: int, min_stream_seq: int = 0
    ) -> Iterator[Iterator[AuditRow]]:
        """Rows carried by messages in [min, max], ordered by event id (binary order)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT {COLUMN_LIST} FROM {self.prefix}_rows "
                "WHERE stream_seq BETWEEN ? AND ? ORDER BY event_id",
                [min_stream_seq, max_stream_seq],
            )
            yield (AuditRow(*r) for r in c.sqlite_cursor)
