"""The hash chain over audit rows: one chain per organization, and how it is built and checked.

Pure (no I/O): the canonical encoding and hash of an entry (`AuditEntry`: what a row's hash
covers, by name, in the order the struct declares), `AuditChainer` (normalized entries →
chained rows, given the chain heads the durable store holds), `ChainVerifier` (a stored
chain's first broken link) and `compare_rows` (a live model against a replayed copy). The rows
themselves are `projections.request_audit`; see docs/adr/0006-audit-trail.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter

from msgspec.structs import replace

from projections.request_audit import AuditEntry, AuditRow, ChainHead, LastUsed

HASH_VERSION = "icodrip-audit-v1"
GENESIS_HASH = "0" * 64
#: The fields covered by `row_hash`, in hashing order: `AuditEntry`'s fields as it declares
#: them (everything a row holds but the hashes themselves and `stream_seq`, which records
#: delivery, not the request). Documented in ADR 0006 and pinned by a test:
#: org_id, seq, event_id, request_id, key_id, key_hint, env, method, route, path, status,
#: client_addr, user_agent, latency_ms, occurred_at.
HASHED_FIELDS: tuple[str, ...] = AuditEntry.__struct_fields__
#: The fields that describe the request itself (what a replay must reproduce exactly).
CONTENT_FIELDS: tuple[str, ...] = tuple(f for f in HASHED_FIELDS if f != "seq")
GENESIS = ChainHead(0, GENESIS_HASH)

#: An entry's (or a row's) hashed values, by name, in `HASHED_FIELDS` order.
hashed_values = attrgetter(*HASHED_FIELDS)
_content_values = attrgetter(*CONTENT_FIELDS)


# -- canonical encoding -------------------------------------------------------------------------
# Row `n` of a chain (sequence numbers 1, 2, 3, … without gaps) stores `prev_hash` = the
# `row_hash` of row `n-1` (GENESIS_HASH for row 1) and
#
#     row_hash = lowercase hex SHA-256 of UTF-8( "icodrip-audit-v1\n" + prev_hash + "\n" + FIELDS )
#
# where FIELDS is the concatenation, in `HASHED_FIELDS` order (the order `AuditEntry` declares
# its fields, read by name), of one item per field:
#
# * null              → `-`
# * any other value   → `<n>:<text>,` where text is the value as text and n its length in
#   UTF-8 bytes (a netstring): strings as stored, integers in decimal, floats as Python's
#   `repr` (the shortest decimal that reads back as the same IEEE-754 double, e.g. `0.5`,
#   `1712345678.123456`, `12.0`, `1e-05`).
#
# Lengths make the encoding unambiguous whatever the strings contain, and every field, the
# chain (`org_id`) and the position (`seq`) are inside the hash: a row cannot be edited, moved
# to another chain or renumbered without its hash changing.


def _item(value: str | int | float | None) -> str:
    if value is None:
        return "-"
    text = (
        value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    )
    size = len(text) if text.isascii() else len(text.encode())
    return f"{size}:{text},"


def canonical(entry: AuditEntry) -> str:
    """FIELDS above: the netstring items of the entry's hashed fields, in `HASHED_FIELDS` order."""
    return "".join(map(_item, hashed_values(entry)))


def compute_hash(prev_hash: str, entry: AuditEntry) -> str:
    """The `row_hash` of `entry` (an `AuditEntry` or a stored `AuditRow`) after `prev_hash`."""
    text = f"{HASH_VERSION}\n{prev_hash}\n{canonical(entry)}"
    return hashlib.sha256(text.encode()).hexdigest()


def row_hash_of(row: AuditRow) -> str:
    """What `row.row_hash` must be, recomputed from its stored fields."""
    return compute_hash(row.prev_hash, row)


# -- building chains ----------------------------------------------------------------------------


@dataclass(slots=True)
class Chained:
    """What one ingest transaction writes of the decoded entries: rows, new heads, last-used
    updates (what decoding rejected, the store writes aside itself)."""

    rows: list[AuditRow] = field(default_factory=list)
    heads: dict[str, ChainHead] = field(default_factory=dict)
    last_used: dict[str, LastUsed] = field(default_factory=dict)
    duplicates: int = 0
    inserted: int = 0
    position: int = 0  # the highest stream sequence among the messages


class AuditChainer:
    """Folds decoded messages (normalized entries) into chain rows, skipping stored event ids.

    `heads` are the current heads of the chains involved (missing = empty chain) and `known`
    the event ids among these messages that are already stored; both come from the store, read
    in the same transaction the result is written in.
    """

    def __init__(self, heads: dict[str, ChainHead], known: set[str]) -> None:
        self.heads = heads
        self.known = known

    def chain(self, decoded: Iterable[tuple[int, list[AuditEntry]]]) -> Chained:
        """All the rows at once (and the rest of the result)."""
        out = Chained()
        out.rows.extend(self.rows(decoded, out))
        return out

    def rows(
        self, decoded: Iterable[tuple[int, list[AuditEntry]]], out: Chained
    ) -> Iterator[AuditRow]:
        """The new rows, lazily (a store can stream them); heads, last-used and duplicates
        accumulate in `out` as they go."""
        heads, known = self.heads, self.known
        last_used, touched = out.last_used, out.heads
        for stream_seq, entries in decoded:
            out.position = max(out.position, stream_seq)
            for entry in entries:
                event_id = entry.event_id
                if event_id in known:
                    out.duplicates += 1
                    continue
                known.add(event_id)
                org = entry.org_id
                head = heads.get(org) or GENESIS
                entry = replace(entry, seq=head.seq + 1)
                digest = compute_hash(head.row_hash, entry)
                heads[org] = touched[org] = ChainHead(entry.seq, digest)
                key_id = entry.key_id
                if key_id is not None:
                    seen = last_used.get(key_id)
                    if seen is None or entry.occurred_at >= seen.at:
                        last_used[key_id] = LastUsed(entry.occurred_at, entry.client_addr)
                out.inserted += 1
                yield AuditRow.chained(entry, head.row_hash, digest, stream_seq)


# -- verification -------------------------------------------------------------------------------
# Editing a row breaks its own hash; deleting a row leaves a gap in the sequence (and a
# `prev_hash` that no longer matches). The store also keeps each chain's head (last sequence
# and hash), so that a deleted last row is noticed too.


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
            if _content_values(a) != _content_values(b):
                fields = [f for f in CONTENT_FIELDS if getattr(a, f) != getattr(b, f)]
                result.changed += 1
                result.note("changed", a.event_id, org_id=a.org_id, seq=a.seq, fields=fields)
            elif a.seq != b.seq:
                result.reordered += 1
            a, b = next(live, None), next(replayed, None)
    return result
