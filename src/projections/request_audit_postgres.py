"""The request-audit store on PostgreSQL: `PostgresRequestAuditStore` and its COPY encoding.

The model is `<prefix>_rows`, `_heads`, `_last_used` and `_rejects` beside the library's
`<prefix>_tracking` (prefix = the store's name in lower case, `requestaudit` by default). An
ingest streams its rows with COPY (`copy_text`) and holds an advisory lock, so that several
ingest workers append to the chains one transaction at a time.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg.errors
from eventsourcing.persistence import Tracking
from psycopg.copy import QueuedLibpqWriter
from psycopg.rows import args_row, tuple_row
from psycopg.sql import SQL, Composable, Composed, Identifier

from adapters.request_events import AUDIT_STREAM
from projections.audit_chain import AuditChainer, Chained
from projections.model_copies import PostgresModelCopy
from projections.request_audit import (
    AuditRow,
    ChainHead,
    Decoded,
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

_COPY_CHUNK = 2000  # rows per COPY write
#: Rows selected in `COLUMN_LIST` order, read back as `AuditRow`s.
_audit_row = args_row(AuditRow)


def _copy_field(value: str | int | float | None) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return repr(value) if isinstance(value, float) else str(value)


def copy_text(rows: Iterable[AuditRow]) -> str:
    """Rows in PostgreSQL's COPY text format (tab-separated, backslash escapes, `\\N` = null),
    their values in `COLUMNS` order.

    Fast path: a row whose text holds no tab, newline, carriage return or backslash beyond
    the separators and null markers needs no escaping.
    """
    lines: list[str] = []
    for row in map(as_columns, rows):
        line = "\t".join(
            [
                "\\N"
                if v is None
                else v
                if type(v) is str
                else repr(v)
                if type(v) is float
                else str(v)
                for v in row
            ]
        )
        if (
            line.count("\t") != len(row) - 1
            or line.count("\\") != row.count(None)
            or "\n" in line
            or "\r" in line
        ):
            line = "\t".join(map(_copy_field, row))
        lines.append(line)
    lines.append("")
    return "\n".join(lines)


class PostgresRequestAuditStore(PostgresModelCopy):
    """The model as `<prefix>_rows`, `_heads`, `_last_used`, `_rejects` beside `_tracking`."""

    name = DEFAULT_NAME

    def __init__(self, datastore: Any, *, tracking_table_name: str, **kwargs: Any) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)
        self.rows_table = self.table("rows")
        self.heads_table = self.table("heads")
        self.last_used_table = self.table("last_used")
        self.rejects_table = self.table("rejects")
        p = self.prefix
        self.sql_create_statements.extend(
            [
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (org_id text NOT NULL, seq bigint NOT NULL, "
                    "event_id text NOT NULL, request_id text NOT NULL, key_id text, "
                    "key_hint text, env text, method text NOT NULL, route text NOT NULL, "
                    "path text NOT NULL, status integer NOT NULL, client_addr text, "
                    "user_agent text, latency_ms double precision NOT NULL, "
                    "occurred_at double precision NOT NULL, prev_hash text NOT NULL, "
                    "row_hash text NOT NULL, stream_seq bigint NOT NULL, "
                    "CONSTRAINT {1} PRIMARY KEY (org_id, seq), CONSTRAINT {2} UNIQUE (event_id))"
                ).format(
                    self.rows_table, Identifier(f"{p}_rows_pk"), Identifier(f"{p}_rows_event")
                ),
                SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (key_id, seq)").format(
                    Identifier(f"{p}_rows_key"), self.rows_table
                ),
                SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (org_id, occurred_at)").format(
                    Identifier(f"{p}_rows_time"), self.rows_table
                ),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (org_id text PRIMARY KEY, "
                    "seq bigint NOT NULL, row_hash text NOT NULL)"
                ).format(self.heads_table),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (key_id text PRIMARY KEY, "
                    "last_used_at double precision NOT NULL, last_used_addr text)"
                ).format(self.last_used_table),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (stream_seq bigint NOT NULL, "
                    "item integer NOT NULL, reason text NOT NULL, payload bytea NOT NULL, "
                    "PRIMARY KEY (stream_seq, item, reason))"
                ).format(self.rejects_table),
            ]
        )
        self._select_known = SQL("SELECT event_id FROM {0} WHERE event_id = ANY(%s)").format(
            self.rows_table
        )
        self._select_heads = SQL(
            "SELECT org_id, seq, row_hash FROM {0} WHERE org_id = ANY(%s)"
        ).format(self.heads_table)
        self._copy_rows = SQL("COPY {0} (" + COLUMN_LIST + ") FROM STDIN").format(self.rows_table)
        self._upsert_heads = SQL(
            "INSERT INTO {0} (org_id, seq, row_hash) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[]) "
            "ON CONFLICT (org_id) DO UPDATE SET seq = EXCLUDED.seq, row_hash = EXCLUDED.row_hash"
        ).format(self.heads_table)
        self._upsert_last_used = SQL(
            "INSERT INTO {0} AS t (key_id, last_used_at, last_used_addr) "
            "SELECT * FROM unnest(%s::text[], %s::float8[], %s::text[]) "
            "ON CONFLICT (key_id) DO UPDATE SET last_used_at = EXCLUDED.last_used_at, "
            "last_used_addr = EXCLUDED.last_used_addr "
            "WHERE t.last_used_at < EXCLUDED.last_used_at"
        ).format(self.last_used_table)
        self._insert_rejects = SQL(
            "INSERT INTO {0} (stream_seq, item, reason, payload) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING"
        ).format(self.rejects_table)

    def ingest(self, messages: Sequence[Message]) -> IngestResult:
        decoded, rejected = decode_messages(messages)
        orgs = sorted(orgs_of(decoded))
        with self.datastore.get_connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=tuple_row)
            # One ingest transaction at a time per copy of the model (workers may be several).
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"icodrip-audit:{self.prefix}",)
            )
            heads = {
                r[0]: ChainHead(int(r[1]), r[2]) for r in cur.execute(self._select_heads, (orgs,))
            }
            chained: Chained | None = None
            if not any(m.redelivered for m in messages):
                # First deliveries rarely hold a stored event (only a batch published twice
                # does): insert optimistically, and let the UNIQUE constraint say otherwise.
                try:
                    with conn.transaction():  # a savepoint
                        chained = self._copy(cur, decoded, dict(heads), set())
                except psycopg.errors.UniqueViolation:
                    chained = None
            if chained is None:
                ids = list(dict.fromkeys(event_ids(decoded)))
                known = {r[0] for r in cur.execute(self._select_known, (ids,))} if ids else set()
                chained = self._copy(cur, decoded, heads, known)
            if chained.heads:
                items = list(chained.heads.items())
                cur.execute(
                    self._upsert_heads,
                    (
                        [org for org, _ in items],
                        [h.seq for _, h in items],
                        [h.row_hash for _, h in items],
                    ),
                )
            if chained.last_used:
                used = list(chained.last_used.items())
                cur.execute(
                    self._upsert_last_used,
                    ([k for k, _ in used], [u.at for _, u in used], [u.addr for _, u in used]),
                )
            if rejected:
                cur.executemany(
                    self._insert_rejects,
                    [(r.stream_seq, r.item, r.reason, r.payload) for r in rejected],
                )
            position = max([chained.position, *(m.stream_seq for m in messages)])
            tracking_cursor = conn.cursor()
            current = self._max_tracking_id(AUDIT_STREAM, tracking_cursor) or 0
            if position > current:
                self._insert_tracking(tracking_cursor, Tracking(AUDIT_STREAM, position))
        return IngestResult(
            chained.inserted, chained.duplicates, len(rejected), max(position, current)
        )

    def _copy(
        self,
        cur: Any,
        decoded: Decoded,
        heads: dict[str, ChainHead],
        known: set[str],
    ) -> Chained:
        chained = Chained()
        rows = AuditChainer(heads, known).rows(decoded, chained)
        # Big batches stream in chunks from a writer thread: PostgreSQL inserts one while the
        # next is hashed. A small batch (the steady state under live traffic) is not worth
        # starting a thread for.
        events = sum(len(batch) for _, batch in decoded)
        writer = QueuedLibpqWriter(cur) if events > _COPY_CHUNK else None
        with cur.copy(self._copy_rows, writer=writer) as copy:
            while chunk := list(itertools.islice(rows, _COPY_CHUNK)):
                copy.write(copy_text(chunk))
        return chained

    def position(self) -> int:
        return self.max_tracking_id(AUDIT_STREAM) or 0

    def _select(
        self, sql: Composed, params: Sequence[Any], row_factory: Any = tuple_row
    ) -> list[Any]:
        with self.datastore.get_connection() as conn:
            cur = conn.cursor(row_factory=row_factory)
            cur.execute(sql, params)
            return list(cur.fetchall())

    def last_used(self, key_ids: Iterable[K]) -> dict[K, LastUsed]:
        wanted = {key_text(k): k for k in key_ids}
        if not wanted:
            return {}
        rows = self._select(
            SQL(
                "SELECT key_id, last_used_at, last_used_addr FROM {0} WHERE key_id = ANY(%s)"
            ).format(self.last_used_table),
            (list(wanted),),
        )
        return {wanted[r[0]]: LastUsed(float(r[1]), r[2]) for r in rows}

    def page(self, query: AuditQuery, limit: int) -> list[AuditRow]:
        where, params = query.where("%s")
        return self._select(
            SQL(
                "SELECT " + COLUMN_LIST + " FROM {0} WHERE " + where + " ORDER BY seq DESC LIMIT %s"
            ).format(self.rows_table),
            [*params, limit],
            _audit_row,
        )

    def count(self) -> int:
        rows = self._select(SQL("SELECT COUNT(*) FROM {0}").format(self.rows_table), ())
        return int(rows[0][0])

    def heads(self) -> dict[str, ChainHead]:
        rows = self._select(
            SQL("SELECT org_id, seq, row_hash FROM {0}").format(self.heads_table), ()
        )
        return {r[0]: ChainHead(int(r[1]), r[2]) for r in rows}

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Any]:
        """A connection in a REPEATABLE READ, read-only transaction: one consistent view."""
        with self.datastore.get_connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield conn

    def verify(
        self, org_id: str | None = None, progress: Callable[[int], None] | None = None
    ) -> list[ChainReport]:
        only = SQL(" WHERE org_id = %s" if org_id else "")
        params = (org_id,) if org_id else ()
        with self._snapshot() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute(
                SQL("SELECT org_id, seq, row_hash FROM {0}{1}").format(self.heads_table, only),
                params,
            )
            heads = {r[0]: ChainHead(int(r[1]), r[2]) for r in cur.fetchall()}
            rows = conn.cursor("icodrip_audit_verify", row_factory=_audit_row)
            rows.itersize = 5000
            rows.execute(
                SQL("SELECT " + COLUMN_LIST + " FROM {0}{1} ORDER BY org_id, seq").format(
                    self.rows_table, only
                ),
                params,
            )
            return verify_scan(heads, rows, progress)

    @contextlib.contextmanager
    def rows_by_event_id(
        self, max_stream_seq: int, min_stream_seq: int = 0
    ) -> Iterator[Iterator[AuditRow]]:
        """Rows carried by messages in [min, max], ordered by event id (binary order)."""
        with self._snapshot() as conn:
            rows = conn.cursor("icodrip_audit_compare", row_factory=_audit_row)
            rows.itersize = 5000
            rows.execute(
                SQL(
                    "SELECT " + COLUMN_LIST + " FROM {0} WHERE stream_seq BETWEEN %s AND %s "
                    'ORDER BY event_id COLLATE "C"'
                ).format(self.rows_table),
                (min_stream_seq, max_stream_seq),
            )
            yield iter(rows)

    @property
    def tables(self) -> Sequence[Composable]:
        return (self.rows_table, self.heads_table, self.last_used_table, self.rejects_table)
