"""Request events as audit rows: the row and its fields, normalization and message decoding.

Pure (no I/O): the values of a request event as every backend stores and reads them back,
the decoding of JetStream messages (and the `Rejected` record of what cannot be read), and
the ids and chains a batch touches. The hash chain over the rows is `projections.audit_chain`,
the durable store `projections.request_audit_store`; see docs/adr/0006-audit-trail.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from adapters.request_events import RequestEvent, RequestEventBatch
from domain.key_format import redact_keys

#: The chain of events that name no organization (unknown, revoked or expired keys).
NO_ORG = "none"
MAX_TEXT = 4096  # characters kept of any text field (the publisher already caps at 2048)


class AuditRow(NamedTuple):
    """One stored request event, in column order (also the order of `COLUMNS`)."""

    org_id: str
    seq: int
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
    occurred_at: float
    prev_hash: str
    row_hash: str
    stream_seq: int  # the JetStream message that carried it (provenance; not hashed)


COLUMNS: tuple[str, ...] = AuditRow._fields


class ChainHead(NamedTuple):
    """The last row of a chain: its sequence number and hash."""

    seq: int
    row_hash: str


class LastUsed(NamedTuple):
    """When and from where a key was last used (Unix seconds, client address)."""

    at: float
    addr: str | None


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


Normalized = tuple[
    str,  # org_id (chain)
    str,  # event_id
    str,  # request_id
    str | None,  # key_id
    str | None,  # key_hint
    str | None,  # env
    str,  # method
    str,  # route
    str,  # path
    int,  # status
    str | None,  # client_addr
    str | None,  # user_agent
    float,  # latency_ms
    float,  # occurred_at
]


def normalize(event: RequestEvent) -> Normalized:
    """The event's values as they are hashed and stored, or InvalidEvent."""
    if not 0 <= event.status <= 999:
        raise InvalidEvent(f"status {event.status} is not an HTTP status")
    latency, occurred = float(event.latency_ms), float(event.occurred_at)
    if not (math.isfinite(latency) and math.isfinite(occurred)):
        raise InvalidEvent("latency_ms and occurred_at must be finite numbers")
    event_id = _required(event.id, "id")
    if len(event_id) > 200:
        raise InvalidEvent("id is longer than 200 characters")
    return (
        _text(event.org_id) or NO_ORG,
        event_id,
        _text(event.request_id) or "",
        _text(event.key_id),
        _text(event.key_hint),
        _text(event.env),
        _required(_client_text(event.method), "method"),
        _client_text(event.route) or "",
        _client_text(event.path) or "",
        int(event.status),
        _client_text(event.client_addr),
        _client_text(event.user_agent),
        round(latency, 3),
        occurred,
    )


# -- decoding -----------------------------------------------------------------------------------

_batch_decoder = msgspec.json.Decoder(RequestEventBatch)


def decode_batch(data: bytes) -> list[RequestEvent]:
    """The events of one JetStream message, or InvalidEvent naming why it is unreadable."""
    try:
        return _batch_decoder.decode(data).events
    except msgspec.DecodeError as error:
        raise InvalidEvent(f"undecodable batch: {error}") from None


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


def event_ids(decoded: Iterable[tuple[int, list[RequestEvent]]]) -> list[str]:
    """The event ids the messages carry (to ask the store which are already known)."""
    return [_text(e.id) or "" for _, events in decoded for e in events]


def orgs_of(decoded: Iterable[tuple[int, list[RequestEvent]]]) -> set[str]:
    """The chains the messages touch (to read their heads)."""
    return {_text(e.org_id) or NO_ORG for _, events in decoded for e in events}


def decode_messages(
    messages: Iterable[Message],
) -> tuple[list[tuple[int, list[RequestEvent]]], list[Rejected]]:
    """Decoded events per message, and the messages that could not be decoded."""
    decoded: list[tuple[int, list[RequestEvent]]] = []
    rejected: list[Rejected] = []
    for message in messages:
        try:
            events, bad = decode_loosely(message.data)
        except InvalidEvent as error:
            rejected.append(Rejected.of(message.stream_seq, -1, error.reason, message.data))
            continue
        decoded.append((message.stream_seq, events))
        rejected.extend(Rejected.of(message.stream_seq, i, why, raw) for i, why, raw in bad)
    return decoded, rejected
