"""Request events as audit rows: the row and its fields, normalization and message decoding.

Pure (no I/O): the values of a request event as every backend stores and reads them back
(`AuditEntry`, what the hash chain covers, and `AuditRow`, an entry with its place in its
chain), the decoding of JetStream messages into entries (and the `Rejected` record of what
cannot be read), and the ids and chains a batch touches. The hash chain over the rows is
`projections.audit_chain`, the durable store `projections.request_audit_store`; see
docs/adr/0006-audit-trail.md.

A request event changes shape twice on its way into the model: `decode_messages` turns the
wire's `RequestEvent`s into normalized `AuditEntry`s (or rejects), and `as_columns` /
`AuditRow(*columns)` are the only conversions into and out of SQL, in `COLUMNS` order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec
from msgspec.structs import astuple

from adapters.request_events import RequestEvent, RequestEventBatch
from domain.key_format import redact_keys

#: The chain of events that name no organization (unknown, revoked or expired keys).
NO_ORG = "none"
MAX_TEXT = 4096  # characters kept of any text field (the publisher already caps at 2048)


class AuditEntry(msgspec.Struct, frozen=True, gc=False):
    """One request event, normalized, at its place in its chain: exactly what `row_hash` covers.

    The declaration order IS the hashing order (`audit_chain.HASHED_FIELDS`, documented in
    docs/adr/0006-audit-trail.md): reordering, adding or removing a field changes every hash,
    and a test fails if it differs from the documented order.
    """

    org_id: str  # the chain (NO_ORG for events without an organization)
    seq: int  # the position in the chain: 1, 2, 3, … (0 until the entry is chained)
    event_id: str
    request_id: str
    key_id: str | None
    key_hint: str | None
    env: str | None
    method: str
    route: str
    path: str
    status: int
    client_addr: str | None
    user_agent: str | None
    latency_ms: float
    occurred_at: float  # Unix seconds


class AuditRow(AuditEntry, frozen=True, gc=False):
    """One stored request event: its entry, then its links and provenance (column order)."""

    prev_hash: str
    row_hash: str
    stream_seq: int  # the JetStream message that carried it (provenance; not hashed)

    @classmethod
    def chained(cls, entry: AuditEntry, prev_hash: str, row_hash: str, stream_seq: int) -> AuditRow:
        """The row of a chained entry: a subclass's fields follow its base's, in their order."""
        return cls(*(*astuple(entry), prev_hash, row_hash, stream_seq))


#: The stored columns, in `AuditRow` declaration order: every SELECT, INSERT and COPY list.
#: A row read back is `AuditRow(*values)` of a `SELECT` of these columns.
COLUMNS: tuple[str, ...] = AuditRow.__struct_fields__


def as_columns(row: AuditRow) -> tuple[str | int | float | None, ...]:
    """A row's values in `COLUMNS` order, for an INSERT or a COPY."""
    return astuple(row)


class ChainHead(NamedTuple):
    """The last row of a chain: its sequence number and hash."""

    seq: int
    row_hash: str


class LastUsed(NamedTuple):
    """When and from where a key was last used (Unix seconds, client address)."""

    at: float
    addr: str | None

    @property
    def moment(self) -> datetime:
        """`at` as an aware UTC time (for `api_key_view(last_used_at=…)`)."""
        return datetime.fromtimestamp(self.at, UTC)


class InvalidEvent(ValueError):
    """A request event that cannot be stored faithfully; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- normalization ------------------------------------------------------------------------------
# Values are normalized before hashing and storing, so that what is hashed is exactly what any
# backend stores and reads back: text without NUL characters or lone surrogates, latency
# rounded to microseconds, and any API key in what the client chose (method, route, path,
# client address, User-Agent) or in a kept-aside payload replaced by its hint
# (`domain.key_format.redact_keys`). Events that cannot be stored faithfully (no id, status
# outside 0..999, non-finite numbers) are rejected by `normalize` with a reason; the store
# keeps them aside rather than dropping them.


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_TEXT:
        value = value[:MAX_TEXT]
    if not value.isascii():
        # Lone surrogates cannot be stored as UTF-8: replace them (and keep the rest).
        value = value.encode("utf-8", "replace").decode("utf-8")
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value


def _required(value: str | None, name: str) -> str:
    text = _text(value)
    if not text:
        raise InvalidEvent(f"{name} is empty")
    return text


def _client_text(value: str | None) -> str | None:
    # What the client chose (path, User-Agent, …): the API redacts keys in it before
    # publishing; this also covers events published before it did. Redacted before `_text`
    # cuts it, since a key cut inside its random part would no longer be recognized.
    return None if value is None else _text(redact_keys(value))


def _redacted_payload(data: bytes) -> bytes:
    """Raw bytes kept aside, with any key in them redacted like client text."""
    if b"k_" not in data:
        return data
    text = data.decode("utf-8", "surrogateescape")
    redacted = redact_keys(text)
    return data if redacted is text else redacted.encode("utf-8", "surrogateescape")


def normalize(event: RequestEvent) -> AuditEntry:
    """The event's values as hashed and stored (seq 0: not chained yet), or InvalidEvent."""
    if not 0 <= event.status <= 999:
        raise InvalidEvent(f"status {event.status} is not an HTTP status")
    latency, occurred = float(event.latency_ms), float(event.occurred_at)
    if not (math.isfinite(latency) and math.isfinite(occurred)):
        raise InvalidEvent("latency_ms and occurred_at must be finite numbers")
    event_id = _required(event.id, "id")
    if len(event_id) > 200:
        raise InvalidEvent("id is longer than 200 characters")
    return AuditEntry(
        org_id=_text(event.org_id) or NO_ORG,
        seq=0,
        event_id=event_id,
        request_id=_text(event.request_id) or "",
        key_id=_text(event.key_id),
        key_hint=_text(event.key_hint),
        env=_text(event.env),
        method=_required(_client_text(event.method), "method"),
        route=_client_text(event.route) or "",
        path=_client_text(event.path) or "",
        status=int(event.status),
        client_addr=_client_text(event.client_addr),
        user_agent=_client_text(event.user_agent),
        latency_ms=round(latency, 3),
        occurred_at=occurred,
    )


# -- decoding -----------------------------------------------------------------------------------

_batch_decoder = msgspec.json.Decoder(RequestEventBatch)


def decode_batch(data: bytes) -> list[RequestEvent]:
    """The events of one JetStream message, or InvalidEvent naming why it is unreadable."""
    try:
        return _batch_decoder.decode(data).events
    except msgspec.DecodeError as error:
        raise InvalidEvent(f"undecodable batch: {error}") from None
    except RecursionError:  # nested deeper than a parser follows: unreadable, not retried
        raise InvalidEvent("undecodable batch: nested too deeply") from None


def decode_loosely(data: bytes) -> tuple[list[RequestEvent], list[tuple[int, str, bytes]]]:
    """A message's readable events, and (index, reason, raw) for each unreadable one.

    One malformed event must not take the rest of its batch down with it.
    """
    try:
        return decode_batch(data), []
    except InvalidEvent as whole:
        try:  # the standard library's parser also reads what msgspec refuses (lone surrogates)
            document = json.loads(data)
        except (ValueError, RecursionError):
            raise whole from None
    items = document.get("events") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise InvalidEvent("undecodable batch: no list of events")
    events: list[RequestEvent] = []
    bad: list[tuple[int, str, bytes]] = []
    for index, item in enumerate(items):
        try:
            events.append(msgspec.convert(item, RequestEvent))
        except msgspec.ValidationError as error:
            bad.append((index, f"undecodable event: {error}", json.dumps(item).encode()))
    return events, bad


# -- messages and what is kept aside ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejected:
    """Something kept aside instead of being chained: a message or an event, and why."""

    stream_seq: int
    item: int  # the event's place in its message (-1: the whole message); with `reason`, unique
    reason: str
    payload: bytes

    @classmethod
    def of(cls, stream_seq: int, item: int, reason: str, payload: bytes) -> Rejected:
        """A reject as it is stored: a key in its reason or raw payload only as its hint."""
        return cls(stream_seq, item, redact_keys(reason), _redacted_payload(payload))


@dataclass(slots=True)
class Message:
    """One JetStream message to ingest: its stream sequence and raw payload."""

    stream_seq: int
    data: bytes
    redelivered: bool = False  # delivered before: its events may already be stored


#: Per decoded message: its stream sequence and its events as (unchained) entries.
Decoded = list[tuple[int, list[AuditEntry]]]

_event_encoder = msgspec.json.Encoder()


def event_ids(decoded: Iterable[tuple[int, list[AuditEntry]]]) -> list[str]:
    """The event ids the messages carry (to ask the store which are already known)."""
    return [entry.event_id for _, entries in decoded for entry in entries]


def orgs_of(decoded: Iterable[tuple[int, list[AuditEntry]]]) -> set[str]:
    """The chains the messages touch (to read their heads)."""
    return {entry.org_id for _, entries in decoded for entry in entries}


def decode_messages(messages: Iterable[Message]) -> tuple[Decoded, list[Rejected]]:
    """Each message's events as normalized entries, and what is kept aside: the messages that
    could not be decoded and the events that could not be decoded or stored faithfully."""
    decoded: Decoded = []
    rejected: list[Rejected] = []
    for message in messages:
        stream_seq = message.stream_seq
        try:
            events, bad = decode_loosely(message.data)
        except InvalidEvent as error:
            rejected.append(Rejected.of(stream_seq, -1, error.reason, message.data))
            continue
        rejected.extend(Rejected.of(stream_seq, i, why, raw) for i, why, raw in bad)
        entries: list[AuditEntry] = []
        for item, event in enumerate(events):  # item: the place among the decodable events
            try:
                entries.append(normalize(event))
            except InvalidEvent as error:
                payload = _event_encoder.encode(event)
                rejected.append(Rejected.of(stream_seq, item, error.reason, payload))
        decoded.append((stream_seq, entries))
    return decoded, rejected
