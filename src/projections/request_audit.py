"""The request-audit model: request events → hash-chained audit rows, one chain per organization.

Pure (no I/O): `AuditChainer` turns decoded request events into rows, given the chain heads the
durable store holds (`request_audit_store`), and `ChainVerifier` walks a stored chain and names
its first broken link. See docs/adr/0006-audit-trail.md.

The chain
---------
Each organization has its own chain; events without an organization (a 401 for an unknown,
revoked or expired key) form the chain `none`. Row `n` (sequence numbers 1, 2, 3, … without
gaps) stores `prev_hash` = the `row_hash` of row `n-1` (64 zeros for row 1) and

    row_hash = lowercase hex SHA-256 of UTF-8( "icodrip-audit-v1\\n" + prev_hash + "\\n" + FIELDS )

where FIELDS is the concatenation, in `HASHED_FIELDS` order, of one item per field:

* null              → `-`
* any other value   → `<n>:<text>,` where text is the value as text and n its length in
  UTF-8 bytes (a netstring): strings as stored, integers in decimal, floats as Python's
  `repr` (the shortest decimal that reads back as the same IEEE-754 double, e.g. `0.5`,
  `1712345678.123456`, `12.0`, `1e-05`).

Lengths make the encoding unambiguous whatever the strings contain, and every field, the
chain (`org_id`) and the position (`seq`) are inside the hash: a row cannot be edited, moved
to another chain or renumbered without its hash changing. Editing a row breaks its own hash;
deleting a row leaves a gap in the sequence (and a `prev_hash` that no longer matches); both
are found by `ChainVerifier`. The store also keeps each chain's head (last sequence and hash)
so that a deleted last row is noticed too.

Values are normalized before hashing and storing, so that what is hashed is exactly what
any backend stores and reads back: text without NUL characters or lone surrogates, latency
rounded to microseconds, and any API key in what the client chose (method, route, path,
client address, User-Agent) or in a kept-aside payload replaced by its hint
(`domain.key_format.redact_keys`). Events that cannot be stored faithfully (no id, status outside
0..999, non-finite numbers) are rejected by `normalize` with a reason; the store keeps them
aside rather than dropping them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from adapters.request_events import RequestEvent, RequestEventBatch
from domain.key_format import redact_keys

HASH_VERSION = "icodrip-audit-v1"
GENESIS_HASH = "0" * 64
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
#: The fields covered by `row_hash`, in hashing order (everything but the hashes themselves
#: and `stream_seq`, which records delivery, not the request).
HASHED_FIELDS: tuple[str, ...] = COLUMNS[:15]
#: The fields that describe the request itself (what a replay must reproduce exactly).
CONTENT_FIELDS: tuple[str, ...] = tuple(f for f in HASHED_FIELDS if f != "seq")


class ChainHead(NamedTuple):
    """The last row of a chain: its sequence number and hash."""

    seq: int
    row_hash: str


GENESIS = ChainHead(0, GENESIS_HASH)


class LastUsed(NamedTuple):
    """When and from where a key was last used (Unix seconds, client address)."""

    at: float
    addr: str | None


class InvalidEvent(ValueError):
    """A request event that cannot be stored faithfully; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- canonical encoding -------------------------------------------------------------------------


def _item(value: str | int | float | None) -> str:
    if value is None:
        return "-"
    text = (
        value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    )
    size = len(text) if text.isascii() else len(text.encode())
    return f"{size}:{text},"


def canonical(fields: Iterable[str | int | float | None]) -> str:
    """FIELDS of the module docstring: the netstring items of the hashed fields."""
    return "".join(map(_item, fields))


def compute_hash(prev_hash: str, fields: Iterable[str | int | float | None]) -> str:
    """The `row_hash` of a row whose hashed fields are `fields` (in `HASHED_FIELDS` order)."""
    text = f"{HASH_VERSION}\n{prev_hash}\n{canonical(fields)}"
    return hashlib.sha256(text.encode()).hexdigest()


def row_hash_of(row: AuditRow) -> str:
    """What `row.row_hash` must be, recomputed from its stored fields."""
    return compute_hash(row.prev_hash, row[:15])


# -- normalization ------------------------------------------------------------------------------


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


# -- building chains ----------------------------------------------------------------------------


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


@dataclass(slots=True)
class Chained:
    """What one ingest transaction writes: rows, new heads, last-used updates, rejects."""

    rows: list[AuditRow] = field(default_factory=list)
    heads: dict[str, ChainHead] = field(default_factory=dict)
    last_used: dict[str, LastUsed] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: int = 0
    inserted: int = 0
    position: int = 0  # the highest stream sequence among the messages


_event_encoder = msgspec.json.Encoder()


class AuditChainer:
    """Folds decoded messages into chain rows, skipping event ids already stored.

    `heads` are the current heads of the chains involved (missing = empty chain) and `known`
    the event ids among these messages that are already stored; both come from the store, read
    in the same transaction the result is written in.
    """

    def __init__(self, heads: dict[str, ChainHead], known: set[str]) -> None:
        self.heads = heads
        self.known = known

    def chain(self, decoded: Iterable[tuple[int, list[RequestEvent]]]) -> Chained:
        """All the rows at once (and the rest of the result)."""
        out = Chained()
        out.rows.extend(self.rows(decoded, out))
        return out

    def rows(
        self, decoded: Iterable[tuple[int, list[RequestEvent]]], out: Chained
    ) -> Iterator[AuditRow]:
        """The new rows, lazily (a store can stream them); heads, last-used, rejects and
        duplicates accumulate in `out` as they go."""
        heads, known = self.heads, self.known
        last_used, touched = out.last_used, out.heads
        for stream_seq, events in decoded:
            out.position = max(out.position, stream_seq)
            for item, event in enumerate(events):
                try:
                    values = normalize(event)
                except InvalidEvent as error:
                    out.rejected.append(
                        Rejected.of(stream_seq, item, error.reason, _event_encoder.encode(event))
                    )
                    continue
                event_id = values[1]
                if event_id in known:
                    out.duplicates += 1
                    continue
                known.add(event_id)
                org = values[0]
                head = heads.get(org) or GENESIS
                seq = head.seq + 1
                hashed = (org, seq, *values[1:])
                digest = compute_hash(head.row_hash, hashed)
                heads[org] = touched[org] = ChainHead(seq, digest)
                key_id = values[3]
                if key_id is not None:
                    seen = last_used.get(key_id)
                    if seen is None or values[13] >= seen.at:
                        last_used[key_id] = LastUsed(values[13], values[10])
                out.inserted += 1
                yield AuditRow(*hashed, head.row_hash, digest, stream_seq)


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


# -- verification -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first broken link of a chain."""

    org_id: str
    seq: int  # the sequence number where the chain stops being intact
    event_id: str | None  # the row found there (None when rows are missing at the end)
    problem: str  # hash_mismatch | prev_hash_mismatch | sequence_gap | missing_rows | head_mismatch
    detail: str

    def as_dict(self) -> dict[str, str | int | None]:
        return {
            "org_id": self.org_id,
            "seq": self.seq,
            "event_id": self.event_id,
            "problem": self.problem,
            "detail": self.detail,
        }


class ChainVerifier:
    """Checks one chain's rows, fed in sequence order; `first_break` is the first problem."""

    def __init__(self, org_id: str) -> None:
        self.org_id = org_id
        self.expected_seq = 1
        self.prev_hash = GENESIS_HASH
        self.rows = 0
        self.first_break: ChainBreak | None = None

    def _break(self, seq: int, event_id: str | None, problem: str, detail: str) -> None:
        if self.first_break is None:
            self.first_break = ChainBreak(self.org_id, seq, event_id, problem, detail)

    def feed(self, row: AuditRow) -> None:
        self.rows += 1
        if self.first_break is None:
            if row.seq != self.expected_seq:
                missing = (
                    f"row {self.expected_seq} is"
                    if row.seq == self.expected_seq + 1
                    else f"rows {self.expected_seq}..{row.seq - 1} are"
                )
                self._break(
                    self.expected_seq,
                    row.event_id,
                    "sequence_gap",
                    f"{missing} missing (deleted?); the next row is {row.seq}",
                )
            elif row.prev_hash != self.prev_hash:
                self._break(
                    row.seq,
                    row.event_id,
                    "prev_hash_mismatch",
                    f"prev_hash does not match row {row.seq - 1}'s hash "
                    "(that row was rewritten, or rows were removed)",
                )
            elif row_hash_of(row) != row.row_hash:
                self._break(
                    row.seq,
                    row.event_id,
                    "hash_mismatch",
                    "the row's fields do not match its row_hash (edited)",
                )
        self.expected_seq = row.seq + 1
        self.prev_hash = row.row_hash

    def finish(self, head: ChainHead | None) -> ChainBreak | None:
        """Compare the last row with the chain head the store recorded."""
        last = self.expected_seq - 1
        if head is None:
            if self.rows:
                self._break(last, None, "head_mismatch", "rows exist but the chain has no head")
        elif head.seq > last:
            self._break(
                last + 1,
                None,
                "missing_rows",
                f"the chain head is at {head.seq} but the last row is {last} (rows deleted)",
            )
        elif head.seq < last or head.row_hash != self.prev_hash:
            self._break(
                head.seq,
                None,
                "head_mismatch",
                f"the chain head ({head.seq}) does not match the last row ({last})",
            )
        return self.first_break


def verify_rows(
    org_id: str, rows: Iterable[AuditRow], head: ChainHead | None
) -> tuple[int, ChainBreak | None]:
    """Walk one chain (rows in sequence order): the row count and the first break, if any."""
    verifier = ChainVerifier(org_id)
    for row in rows:
        verifier.feed(row)
    return verifier.rows, verifier.finish(head)


# -- comparing two copies (replay) --------------------------------------------------------------


@dataclass(slots=True)
class Comparison:
    """Differences between a live model and a replayed one, by event id."""

    compared: int = 0
    missing_in_live: int = 0  # in the stream, not in the live model
    extra_in_live: int = 0  # in the live model, not in the stream
    changed: int = 0  # same id, different content
    reordered: int = 0  # same content, another place in its chain (order of ingestion)
    examples: list[dict[str, object]] = field(default_factory=list)
    max_examples: int = 20

    @property
    def differs(self) -> bool:
        return bool(self.missing_in_live or self.extra_in_live or self.changed)

    def note(self, kind: str, event_id: str, **details: object) -> None:
        if len(self.examples) < self.max_examples:
            self.examples.append({"kind": kind, "event_id": event_id, **details})


_CONTENT_INDEXES = tuple(COLUMNS.index(f) for f in CONTENT_FIELDS)


def compare_rows(live: Iterator[AuditRow], replayed: Iterator[AuditRow]) -> Comparison:
    """Merge-walk two row streams, each ordered by event id."""
    result = Comparison()
    a, b = next(live, None), next(replayed, None)
    while a is not None or b is not None:
        result.compared += 1
        if b is None or (a is not None and a.event_id < b.event_id):
            assert a is not None
            result.extra_in_live += 1
            result.note("extra_in_live", a.event_id, org_id=a.org_id, seq=a.seq)
            a = next(live, None)
        elif a is None or b.event_id < a.event_id:
            result.missing_in_live += 1
            result.note("missing_in_live", b.event_id, org_id=b.org_id)
            b = next(replayed, None)
        else:
            fields = [COLUMNS[i] for i in _CONTENT_INDEXES if a[i] != b[i]]
            if fields:
                result.changed += 1
                result.note("changed", a.event_id, org_id=a.org_id, seq=a.seq, fields=fields)
            elif a.seq != b.seq:
                result.reordered += 1
            a, b = next(live, None), next(replayed, None)
    return result
