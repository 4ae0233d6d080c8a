"""What every request-audit store shares: its protocol, the queries and results it deals in.

`RequestAuditStore` (the protocol the ingest worker, the API, the CLI and the tests use),
`AuditQuery` (a filtered page of one organization's rows), `IngestResult` and `ChainReport`,
and the helpers both backends (`request_audit_sqlite`, `request_audit_postgres`) build on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from uuid import UUID

from domain.ids import format_key_id
from projections.audit_chain import ChainBreak, ChainVerifier
from projections.request_audit import COLUMNS, AuditRow, ChainHead, LastUsed, Message

DEFAULT_NAME = "RequestAudit"
#: The row columns (`AuditRow`'s fields, in its order), for the stores' SELECT, INSERT and COPY
#: lists: a selected row is `AuditRow(*values)`, an inserted one `as_columns(row)`.
COLUMN_LIST = ", ".join(COLUMNS)

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


class StreamFedModel(Protocol):
    """A read model fed from the request-event stream (the request-audit and usage models):
    what the ingest worker and a rebuild's `catch_up` need of it."""

    name: str

    def ingest(self, messages: Sequence[Message]) -> IngestResult: ...
    def position(self) -> int: ...


class RequestAuditStore(Protocol):
    """What the ingest worker, the API, the CLI and the tests need from the durable model.

    `ingest` writes, in ONE transaction, everything a fetch of JetStream messages produces: the
    new rows, the new chain heads, the keys' last use, the events kept aside as unreadable, and
    the stream position in the `eventsourcing` tracking table (application name = the stream's
    name). Idempotence is by event id (UNIQUE): the transaction first reads which of the
    incoming ids are already stored, and chains only the others, so a message delivered again
    — or an event published twice — inserts nothing.
    """

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


def key_text(key_id: UUID | str) -> str:
    """A key id as the stores keep it (text), given as a UUID or as text."""
    return format_key_id(key_id) if isinstance(key_id, UUID) else key_id


def verify_scan(
    heads: dict[str, ChainHead],
    rows: Iterable[AuditRow],
    progress: Callable[[int], None] | None,
) -> list[ChainReport]:
    """Check the chains whose rows come ordered by (org_id, seq)."""
    reports: list[ChainReport] = []
    verifier: ChainVerifier | None = None
    seen: set[str] = set()

    def finish(v: ChainVerifier) -> None:
        head = heads.get(v.org_id)
        reports.append(ChainReport(v.org_id, v.rows, head, v.finish(head)))

    for done, row in enumerate(rows, 1):
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
