"""The durable request-audit model: audit rows, chain heads, last-used, rejects and the position.

One ingest transaction writes everything a fetch of JetStream messages produces: the new rows
(COPY on PostgreSQL, executemany on SQLite), the new chain heads, the keys' last use, the
events kept aside as unreadable, and the stream position in the `eventsourcing` tracking table
(application name = the stream's name). Idempotence is by event id (UNIQUE): the transaction
first reads which of the incoming ids are already stored, and chains only the others, so a
message delivered again — or an event published twice — inserts nothing. On PostgreSQL the
transaction holds an advisory lock, so that several ingest workers append to the chains one
at a time.

Tables (prefix = the store's name in lower case, `requestaudit` by default):
`<prefix>_rows`, `<prefix>_heads` (org_id → seq, row_hash), `<prefix>_last_used`
(key_id → last_used_at, last_used_addr), `<prefix>_rejects` and, from the library,
`<prefix>_tracking` (PostgreSQL) or `tracking` (SQLite, one file per store).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast
from uuid import UUID

import psycopg.errors
from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment
from psycopg.copy import QueuedLibpqWriter
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composable, Composed, Identifier

from adapters.event_store import event_store_env, schema_lock
from adapters.request_events import AUDIT_STREAM, RequestEvent
from adapters.settings import Settings
from domain.ids import format_key_id
from projections.request_audit import (
    COLUMNS,
    AuditChainer,
    AuditRow,
    ChainBreak,
    Chained,
    ChainHead,
    ChainVerifier,
    LastUsed,
    Message,
    Rejected,
    decode_messages,
    event_ids,
    orgs_of,
)

DEFAULT_NAME = "RequestAudit"
_COLUMN_LIST = ", ".join(COLUMNS)
_SQLITE_CHUNK = 900  # bound parameters per `IN (...)` on SQLite
_COPY_CHUNK = 2000  # rows per COPY write

K = TypeVar("K", UUID, str)


@dataclass(frozen=True, slots=True)
class IngestResult:
    inserted: int
    duplicates: int
    rejected: int
    position: int


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """A filtered view of one organization's rows, newest first."""

    org_id: str
    env: str | None = None
    key_id: str | None = None
    status_min: int | None = None
    status_max: int | None = None
    method: str | None = None
    route: str | None = None
    since: float | None = None  # occurred_at >= since
    until: float | None = None  # occurred_at < until
    before_seq: int | None = None  # the cursor: rows with a smaller sequence number

    def where(self, placeholder: str) -> tuple[str, list[Any]]:
        """The WHERE clause (built from constants only) and its parameters."""
        p = placeholder
        clauses, params = [f"org_id = {p}"], [self.org_id]
        optional: list[tuple[str, Any]] = [
            (f"env = {p}", self.env),
            (f"key_id = {p}", self.key_id),
            (f"status >= {p}", self.status_min),
            (f"status <= {p}", self.status_max),
            (f"method = {p}", self.method),
            (f"route = {p}", self.route),
            (f"occurred_at >= {p}", self.since),
            (f"occurred_at < {p}", self.until),
            (f"seq < {p}", self.before_seq),
        ]
        for clause, value in optional:
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return " AND ".join(clauses), params


@dataclass(frozen=True, slots=True)
class ChainReport:
    org_id: str
    rows: int
    head: ChainHead | None
    broken: ChainBreak | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "rows": self.rows,
            "head_seq": None if self.head is None else self.head.seq,
            "intact": self.broken is None,
            "break": None if self.broken is None else self.broken.as_dict(),
        }


class RequestAuditStore(Protocol):
    """What the ingest worker, the API, the CLI and the tests need from the durable model."""

    name: str

    def ingest(self, messages: Sequence[Message]) -> IngestResult: ...
    def position(self) -> int: ...
    def last_used(self, key_ids: Iterable[K]) -> dict[K, LastUsed]: ...
    def page(self, query: AuditQuery, limit: int) -> list[AuditRow]: ...
    def count(self) -> int: ...
    def heads(self) -> dict[str, ChainHead]: ...
    def verify(
        self, org_id: str | None = None, progress: Callable[[int], None] | None = None
    ) -> list[ChainReport]: ...
    def rows_by_event_id(
        self, max_stream_seq: int, min_stream_seq: int = 0
    ) -> contextlib.AbstractContextManager[Iterator[AuditRow]]: ...
    def drop(self) -> None: ...
    def close(self) -> None: ...


def _key_text(key_id: UUID | str) -> str:
    return format_key_id(key_id) if isinstance(key_id, UUID) else key_id


def _verify_scan(
    heads: dict[str, ChainHead],
    rows: Iterable[Sequence[Any]],
    progress: Callable[[int], None] | None,
) -> list[ChainReport]:
    """Check the chains whose rows come ordered by (org_id, seq)."""
    reports: list[ChainReport] = []
    verifier: ChainVerifier | None = None
    seen: set[str] = set()

    def finish(v: ChainVerifier) -> None:
        head = heads.get(v.org_id)
        reports.append(ChainReport(v.org_id, v.rows, head, v.finish(head)))

    for done, raw in enumerate(rows, 1):
        row = AuditRow(*raw)
        if verifier is None or verifier.org_id != row.org_id:
            if verifier is not None:
                finish(verifier)
            verifier = ChainVerifier(row.org_id)
            seen.add(row.org_id)
        verifier.feed(row)
        if progress is not None and done % 10_000 == 0:
            progress(done)
    if verifier is not None:
        finish(verifier)
    for org in sorted(set(heads) - seen):
        finish(ChainVerifier(org))
    return sorted(reports, key=lambda r: r.org_id)


# -- SQLite --------------------------------------------------------------------------------------


class SQLiteRequestAuditStore(SQLiteTrackingRecorder):
    """The model in its own SQLite file (one file per store name, so fixed table names)."""

    name = DEFAULT_NAME
    prefix = "audit"
    path: Path

    def configure(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path

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

    def _in(self, c: Any, sql: str, values: Sequence[str]) -> list[Any]:
        found: list[Any] = []
        for start in range(0, len(values), _SQLITE_CHUNK):
            chunk = values[start : start + _SQLITE_CHUNK]
            c.execute(sql.format(",".join("?" * len(chunk))), chunk)
            found.extend(c.fetchall())
        return found

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
                for r in self._in(c, f"SELECT event_id FROM {t}_rows WHERE event_id IN ({{}})", ids)
            }
            heads = {
                r[0]: ChainHead(int(r[1]), r[2])
                for r in self._in(
                    c, f"SELECT org_id, seq, row_hash FROM {t}_heads WHERE org_id IN ({{}})", orgs
                )
            }
            chained = AuditChainer(heads, known).chain(decoded)
            chained.rejected[:0] = rejected
            placeholders = ", ".join("?" * len(COLUMNS))
            c.executemany(
                f"INSERT INTO {t}_rows ({_COLUMN_LIST}) VALUES ({placeholders})", chained.rows
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
                [(r.stream_seq, r.item, r.reason, r.payload) for r in chained.rejected],
            )
            position = max([chained.position, *(m.stream_seq for m in messages)])
            current = self._max_tracking_id(AUDIT_STREAM, c) or 0
            if position > current:
                self._insert_tracking(c, Tracking(AUDIT_STREAM, position))
        return IngestResult(
            len(chained.rows), chained.duplicates, len(chained.rejected), max(position, current)
        )

    def position(self) -> int:
        return self.max_tracking_id(AUDIT_STREAM) or 0

    def last_used(self, key_ids: Iterable[K]) -> dict[K, LastUsed]:
        wanted = {_key_text(k): k for k in key_ids}
        with self.datastore.transaction(commit=False) as c:
            rows = self._in(
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
                f"SELECT {_COLUMN_LIST} FROM {self.prefix}_rows WHERE {where} "
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
                f"SELECT {_COLUMN_LIST} FROM {t}_rows"
                + (" WHERE org_id = ?" if org_id else "")
                + " ORDER BY org_id, seq",
                [org_id] if org_id else [],
            )
            return _verify_scan(heads, c.sqlite_cursor, progress)

    @contextlib.contextmanager
    def rows_by_event_id(
        self, max_stream_seq: int, min_stream_seq: int = 0
    ) -> Iterator[Iterator[AuditRow]]:
        """Rows carried by messages in [min, max], ordered by event id (binary order)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT {_COLUMN_LIST} FROM {self.prefix}_rows "
                "WHERE stream_seq BETWEEN ? AND ? ORDER BY event_id",
                [min_stream_seq, max_stream_seq],
            )
            yield (AuditRow(*r) for r in c.sqlite_cursor)

    def drop(self) -> None:
        self.datastore.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        self.datastore.close()


# -- PostgreSQL ----------------------------------------------------------------------------------


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


def copy_text(rows: Iterable[Sequence[str | int | float | None]]) -> str:
    """Rows in PostgreSQL's COPY text format (tab-separated, backslash escapes, `\\N` = null).

    Fast path: a row whose text holds no tab, newline, carriage return or backslash beyond
    the separators and null markers needs no escaping.
    """
    lines: list[str] = []
    for row in rows:
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


class PostgresRequestAuditStore(PostgresTrackingRecorder):
    """The model as `<prefix>_rows`, `_heads`, `_last_used`, `_rejects` beside `_tracking`."""

    name = DEFAULT_NAME

    def __init__(self, datastore: Any, *, tracking_table_name: str, **kwargs: Any) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)
        self.prefix = tracking_table_name.removesuffix("_tracking")
        schema = Identifier(self.datastore.schema)

        def table(suffix: str) -> Composable:
            return SQL("{0}.{1}").format(schema, Identifier(f"{self.prefix}_{suffix}"))

        self.rows_table = table("rows")
        self.heads_table = table("heads")
        self.last_used_table = table("last_used")
        self.rejects_table = table("rejects")
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
        self._copy_rows = SQL("COPY {0} (" + _COLUMN_LIST + ") FROM STDIN").format(self.rows_table)
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
                        chained = self._copy(cur, decoded, rejected, dict(heads), set())
                except psycopg.errors.UniqueViolation:
                    chained = None
            if chained is None:
                ids = list(dict.fromkeys(event_ids(decoded)))
                known = {r[0] for r in cur.execute(self._select_known, (ids,))} if ids else set()
                chained = self._copy(cur, decoded, rejected, heads, known)
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
            if chained.rejected:
                cur.executemany(
                    self._insert_rejects,
                    [(r.stream_seq, r.item, r.reason, r.payload) for r in chained.rejected],
                )
            position = max([chained.position, *(m.stream_seq for m in messages)])
            tracking_cursor = conn.cursor()
            current = self._max_tracking_id(AUDIT_STREAM, tracking_cursor) or 0
            if position > current:
                self._insert_tracking(tracking_cursor, Tracking(AUDIT_STREAM, position))
        return IngestResult(
            chained.inserted, chained.duplicates, len(chained.rejected), max(position, current)
        )

    def _copy(
        self,
        cur: Any,
        decoded: list[tuple[int, list[RequestEvent]]],
        rejected: list[Rejected],
        heads: dict[str, ChainHead],
        known: set[str],
    ) -> Chained:
        chained = Chained(rejected=list(rejected))
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

    def _select(self, sql: Composed, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self.datastore.get_connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute(sql, params)
            return cur.fetchall()

    def last_used(self, key_ids: Iterable[K]) -> dict[K, LastUsed]:
        wanted = {_key_text(k): k for k in key_ids}
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
        rows = self._select(
            SQL(
                "SELECT "
                + _COLUMN_LIST
                + " FROM {0} WHERE "
                + where
                + " ORDER BY seq DESC LIMIT %s"
            ).format(self.rows_table),
            [*params, limit],
        )
        return [AuditRow(*r) for r in rows]

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
            rows = conn.cursor("icodrip_audit_verify", row_factory=tuple_row)
            rows.itersize = 5000
            rows.execute(
                SQL("SELECT " + _COLUMN_LIST + " FROM {0}{1} ORDER BY org_id, seq").format(
                    self.rows_table, only
                ),
                params,
            )
            return _verify_scan(heads, rows, progress)

    @contextlib.contextmanager
    def rows_by_event_id(
        self, max_stream_seq: int, min_stream_seq: int = 0
    ) -> Iterator[Iterator[AuditRow]]:
        """Rows carried by messages in [min, max], ordered by event id (binary order)."""
        with self._snapshot() as conn:
            rows = conn.cursor("icodrip_audit_compare", row_factory=tuple_row)
            rows.itersize = 5000
            rows.execute(
                SQL(
                    "SELECT " + _COLUMN_LIST + " FROM {0} WHERE stream_seq BETWEEN %s AND %s "
                    'ORDER BY event_id COLLATE "C"'
                ).format(self.rows_table),
                (min_stream_seq, max_stream_seq),
            )
            yield (AuditRow(*r) for r in rows)

    def drop(self) -> None:
        with self.datastore.transaction(commit=True) as cur:
            for table in (
                self.rows_table,
                self.heads_table,
                self.last_used_table,
                self.rejects_table,
            ):
                cur.execute(SQL("DROP TABLE IF EXISTS {0}").format(table))
            cur.execute(
                SQL("DROP TABLE IF EXISTS {0}.{1}").format(
                    Identifier(self.datastore.schema), Identifier(self.tracking_table_name)
                )
            )
        self.close()

    def close(self) -> None:
        self.datastore.close()


# -- opening ------------------------------------------------------------------------------------


def open_request_audit_store(
    settings: Settings, name: str = DEFAULT_NAME, *, pool_size: int = 2
) -> RequestAuditStore:
    """The audit model `name` on the backend the settings name (another name = another copy)."""
    env = event_store_env(settings, sqlite_file=f"{name.lower()}.sqlite3")
    if settings.is_embedded:
        path = settings.data_dir / f"{name.lower()}.sqlite3"
        factory = InfrastructureFactory.construct(Environment(name, env))
        sqlite_store = cast(
            SQLiteRequestAuditStore, factory.tracking_recorder(SQLiteRequestAuditStore)
        )
        sqlite_store.configure(name, path)
        return cast(RequestAuditStore, sqlite_store)
    env["POSTGRES_POOL_SIZE"] = str(pool_size)
    env["POSTGRES_MAX_OVERFLOW"] = "8"
    factory = InfrastructureFactory.construct(Environment(name, env))
    with schema_lock(settings):
        store = cast(
            PostgresRequestAuditStore, factory.tracking_recorder(PostgresRequestAuditStore)
        )
    store.name = name
    return cast(RequestAuditStore, store)


_shared: dict[tuple[str | None, str], RequestAuditStore] = {}
_shared_lock = threading.Lock()


def request_audit_store_for(settings: Settings) -> RequestAuditStore:
    """The process's shared audit store for these settings (opened on first use).

    For the API: its handlers and the key views (`last_used`) call this; close the stores
    with `close_request_audit_stores()` when the process stops.
    """
    from projections.request_audit_projection import LiveRequestAuditStore  # it imports this

    key = (settings.database_url, str(settings.data_dir))
    with _shared_lock:
        store = _shared.get(key)
        if store is None:
            store = _shared[key] = cast(RequestAuditStore, LiveRequestAuditStore(settings))
        return store


def close_request_audit_stores() -> None:
    """Close the stores `request_audit_store_for` opened."""
    with _shared_lock:
        stores = list(_shared.values())
        _shared.clear()
    for store in stores:
        with contextlib.suppress(Exception):
            store.close()


def last_used(settings: Settings, key_ids: Iterable[K]) -> dict[K, LastUsed]:
    """When and from where each of these keys was last used (absent = never, or not yet seen)."""
    return request_audit_store_for(settings).last_used(key_ids)


def last_used_at(used: LastUsed | None) -> datetime | None:
    """A last-use time as an aware UTC datetime (for `api_key_view(last_used_at=…)`)."""
    return None if used is None else datetime.fromtimestamp(used.at, UTC)
