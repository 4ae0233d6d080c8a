"""What every usage store shares: its protocol, its rows and queries, and its idempotence rules.

Pure (no I/O). `UsageStore` is what the feeding worker, the API, the CLI and the tests use;
`usage_sqlite` and `usage_postgres` implement it, `usage_store.open_usage_store` opens one.
`cover` says which buckets a range's totals are read from.

**Idempotence is by event id**, as for the request-audit model (docs/adr/0006-audit-trail.md):
a write is one transaction that records the ids of the events it counts (`<model>_seen`, with
the stream sequence of the message each came in), counts only the ids it recorded first,
merges their buckets into the stored ones and moves the stream position. Skipping by stream
position alone would lose events: after a worker crash the server redelivers the
unacknowledged messages *after* newer ones, and several workers may share the consumer; and
the same events re-published under another message carry another stream sequence.

A key per event is the price, so `prune` forgets ids, but only those that can no longer come
back: older than `UsageRetention.seen_event_days` (by the time in the id, `new_event_id`,
before the newest counted event's: `stream_clock`) AND
in a message the consumer had acknowledged (`acked_through`, the consumer's ack floor: every
message up to it was written before it was acknowledged). It records both as the "floor". An
event below the floor's time in a message at or below the floor's sequence was counted when
its message was written, and is skipped; any other event is checked by id, so a catch-up of
old messages delivered out of order counts each once. (An event re-published under a new
message after its id was forgotten — a week later — would be counted twice; the publisher
re-sends within hours.)
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import msgspec

from projections.request_audit import NO_ORG, Message
from projections.request_audit_query import IngestResult
from projections.usage import (
    COUNTER_FIELDS,
    GRANULARITIES,
    Granularity,
    LatencySketch,
    UsageCounters,
    UsageKey,
    add_stored_sketch,
    add_stored_sketches,
    iso,
)
from projections.usage_events import CountedRequest, DecodedRequests, decode_usage
from projections.usage_org import ORG_WIDE_IDS
from projections.usage_retention import UsageRetention

DEFAULT_NAME = "Usage"
#: The stored bucket's columns; `span` is the granularity in seconds, `latency` the sketch.
CELL_COLUMNS = ("org_id", "span", "key_id", "start", "env", *COUNTER_FIELDS, "latency")
CELL_COLUMN_LIST = ", ".join(CELL_COLUMNS)
#: The prefix of event ids as `new_event_id` makes them: 32 hex digits, 12 of Unix ms first.
EVENT_ID_LENGTH = 32

Cell = tuple[str, int, str, int, str | None, int, int, int, int, int, int, bytes]


def cell_values(key: UsageKey, counters: UsageCounters) -> Cell:
    """A bucket's values in `CELL_COLUMNS` order, for an INSERT."""
    return (
        key.org_id,
        key.granularity.seconds,
        key.key_id,
        key.start,
        counters.env,
        *counters.counts(),
        counters.latency.to_bytes(),
    )


def cell_from_row(row: Sequence[Any]) -> tuple[UsageKey, UsageCounters]:
    """A bucket read back from a `SELECT` of `CELL_COLUMNS`."""
    (
        org_id,
        span,
        key_id,
        start,
        env,
        requests,
        success,
        client,
        server,
        limited,
        refused,
        latency,
    ) = row
    key = UsageKey(org_id, key_id, Granularity(int(span)), int(start))
    counters = UsageCounters(
        env, requests, success, client, server, limited, refused, LatencySketch.from_bytes(latency)
    )
    return key, counters


class UsageRow(msgspec.Struct, frozen=True):
    """One key's usage in one bucket, as the API lists it."""

    key_id: str
    start: int  # Unix seconds, aligned to the granularity
    counters: UsageCounters

    @classmethod
    def of(cls, row: Sequence[Any]) -> UsageRow:
        """The row of a bucket read back from a `SELECT` of `CELL_COLUMNS`."""
        key, counters = cell_from_row(row)
        return cls(key.key_id, key.start, counters)

    def as_dict(self) -> dict[str, Any]:
        """The API's data row: start (ISO-8601, UTC), key id, counters and percentiles."""
        return {"start": iso(self.start), "key_id": self.key_id, **self.counters.summary()}

    @property
    def cursor(self) -> UsageCursor:
        """Where the next page starts: after this row."""
        return UsageCursor(self.key_id, self.start)


class UsageCursor(NamedTuple):
    """The last row of a page: the next page holds the rows after (key_id, start)."""

    key_id: str
    start: int

    def encode(self) -> str:
        """An opaque token for the API."""
        raw = msgspec.json.encode([self.key_id, self.start])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> UsageCursor:
        """The cursor a token names; ValueError for a token `encode` did not make."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            key_id, start = msgspec.json.decode(raw, type=tuple[str, int])
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise ValueError("not a usage cursor") from None
        if not 0 <= start < 2**62 or len(key_id) > 100:  # what a stored row can hold
            raise ValueError("not a usage cursor")
        return cls(key_id, start)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """One organization's buckets of one granularity in [start, end), by (key_id, start)."""

    org_id: str
    granularity: Granularity
    start: int
    end: int
    key_ids: Sequence[str] | None = None  # None: every key of the organization
    env: str | None = None
    after: UsageCursor | None = None

    def where(self, placeholder: str, *, array: bool) -> tuple[str, list[Any]]:
        """The WHERE clause (built from constants only) and its parameters; `array`: the key
        ids as one array parameter (PostgreSQL) rather than one parameter each (SQLite)."""
        p = placeholder
        clauses = [f"org_id = {p}", f"span = {p}", f"start >= {p}", f"start < {p}"]
        params: list[Any] = [self.org_id, self.granularity.seconds, self.start, self.end]
        if self.key_ids is None:  # the keys' rows, not their organization's (`usage_org`)
            clauses.append(f"key_id NOT IN ({', '.join([p] * len(ORG_WIDE_IDS))})")
            params.extend(ORG_WIDE_IDS)
        else:
            if array:
                clauses.append(f"key_id = ANY({p})")
                params.append(list(self.key_ids))
            else:
                clauses.append(f"key_id IN ({', '.join([p] * len(self.key_ids)) or 'NULL'})")
                params.extend(self.key_ids)
        if self.env is not None:
            clauses.append(f"env = {p}")
            params.append(self.env)
        if self.after is not None:
            clauses.append(f"(key_id, start) > ({p}, {p})")
            params.extend(self.after)
        return " AND ".join(clauses), params


@dataclass(frozen=True, slots=True)
class WriteResult:
    counted: int  # events counted by this write
    duplicates: int  # events already counted (recognized by id, or replayed below the floor)
    position: int  # the stream position after the write


@dataclass(frozen=True, slots=True)
class PruneResult:
    buckets: int  # expired buckets removed
    event_ids: int  # event ids forgotten


class Floor(NamedTuple):
    """What `prune` forgot: event ids below `event_id` in messages up to `stream_seq`."""

    event_id: str
    stream_seq: int


NO_FLOOR = Floor("", 0)  # nothing forgotten yet


class Candidates(NamedTuple):
    """A batch's keyed entries to count if their id is recorded now for the first time (with
    the stream sequence of their message), and how many were skipped as already counted."""

    by_id: dict[str, tuple[int, CountedRequest]]
    replayed: int  # below the floor: counted when their message was written


def candidates(decoded: DecodedRequests, floor: Floor) -> Candidates:
    """Which of a batch's entries may count (see the module docstring)."""
    by_id: dict[str, tuple[int, CountedRequest]] = {}
    replayed = 0
    floor_id, floor_seq = floor
    for stream_seq, entries in decoded:
        for entry in entries:
            if entry.key_id is None or entry.org_id is None or entry.org_id == NO_ORG:
                continue  # no key's usage: no id to remember either
            event_id = entry.event_id
            if stream_seq <= floor_seq and event_id < floor_id and len(event_id) == EVENT_ID_LENGTH:
                replayed += 1
            else:
                by_id.setdefault(event_id, (stream_seq, entry))  # twice in one batch: once
    return Candidates(by_id, replayed)


def stream_clock(newest_event_id: str | None, now: float) -> float:
    """When the stream's newest counted event happened (its id starts with its time), never
    later than `now`: ids are forgotten by the stream's clock, so a catch-up of weeks-old
    messages keeps the last days *of the stream* recognizable (a publisher's re-send of an
    event follows it within minutes in the stream, whatever the wall clock says)."""
    if newest_event_id is None or len(newest_event_id) != EVENT_ID_LENGTH:
        return now
    try:
        return min(now, int(newest_event_id[:12], 16) / 1000)
    except ValueError:
        return now


def next_floor(current: Floor, id_floor: str, acked_through: int, position: int) -> Floor:
    """The floor a prune moves to: never back; no further than what the store holds (a
    store restored from a backup is behind the consumer's acknowledgements)."""
    return Floor(
        max(current.event_id, id_floor), max(current.stream_seq, min(acked_through, position))
    )


def merge_stored(
    batch: dict[UsageKey, UsageCounters], stored: Iterable[Sequence[Any]]
) -> dict[UsageKey, UsageCounters]:
    """The batch's buckets with the stored buckets (rows of `CELL_COLUMNS`) merged in."""
    for row in stored:
        key, counters = cell_from_row(row)
        batch[key].merge(counters)
    return batch


class UsageStore(Protocol):
    """What the feeding worker, the API, the CLI and the tests need from the usage model.

    `write` counts, in ONE transaction, the keyed events of a fetch of JetStream messages
    (decoded by `projections.request_audit.decode_messages`) that it has not counted before,
    and records `position` (the fetch's last stream sequence) in the `eventsourcing` tracking
    table (application name = the stream's name).
    """

    name: str

    def ingest(self, messages: Sequence[Message]) -> IngestResult: ...
    def write(self, decoded: DecodedRequests, position: int) -> WriteResult: ...
    def position(self) -> int: ...
    def query(self, query: UsageQuery, limit: int) -> list[UsageRow]: ...
    def totals(
        self,
        org_id: str,
        start: int,
        end: int,
        key_ids: Sequence[str] | None = None,
        env: str | None = None,
    ) -> UsageCounters: ...
    def count(self) -> int: ...
    def prune(
        self, retention: UsageRetention, now: float, acked_through: int | None = None
    ) -> PruneResult: ...
    def drop(self) -> None: ...
    def close(self) -> None: ...


class _Writable(Protocol):
    def write(self, decoded: DecodedRequests, position: int) -> WriteResult: ...


def ingest_messages(store: _Writable, messages: Sequence[Message]) -> IngestResult:
    """`store.write` of a fetch of stream messages, as the ingest worker counts it.

    Undecodable messages and events are skipped here (the request-audit model keeps them
    aside, so `rejected` stays 0 rather than reporting them twice).
    """
    if not messages:
        return IngestResult(0, 0, 0, 0)
    result = store.write(decode_usage(messages), max(m.stream_seq for m in messages))
    return IngestResult(result.counted, result.duplicates, 0, result.position)


def cover(start: int, end: int) -> list[tuple[Granularity, int, int]]:
    """The fewest buckets that tile [start, end) (minute-aligned): whole days as days, whole
    hours as hours, the rest as minutes; (granularity, from, to) parts, in time order.

    A range's totals read from these instead of its minutes: 24 hours of a key are 24 rows,
    not 1,440, and stay readable after the minutes expired.
    """
    if start % 60 or end % 60:
        raise ValueError("a range starts and ends on whole minutes")
    parts: list[tuple[Granularity, int, int]] = []

    def split(lo: int, hi: int, level: int) -> None:
        if lo >= hi:
            return
        if level < 0:
            parts.append((Granularity.MINUTE, lo, hi))
            return
        granularity = GRANULARITIES[level + 1]
        size = granularity.seconds
        first, last = -(-lo // size) * size, hi // size * size
        if first >= last:
            split(lo, hi, level - 1)
            return
        split(lo, first, level - 1)
        parts.append((granularity, first, last))
        split(last, hi, level - 1)

    split(start, end, 1)
    return sorted(parts, key=lambda part: part[1])


#: What `totals` selects: the counters and the sketch, for `accumulate`.
TOTAL_COLUMN_LIST = ", ".join((*COUNTER_FIELDS, "latency"))


def accumulate(total: UsageCounters, rows: Iterable[Sequence[Any]]) -> UsageCounters:
    """`total` with rows of `TOTAL_COLUMN_LIST` added (the totals of a range).

    An organization's day is tens of thousands of rows (its keys' hours, and minutes at the
    ends): the sums are kept in locals and the sketches added into one dict of bins.
    """
    sketch = total.latency
    bins, zeros = dict(sketch.bins), sketch.zeros
    sums = [0] * len(COUNTER_FIELDS)
    for requests, success, client, server, limited, refused, latency in rows:
        sums[0] += requests
        sums[1] += success
        sums[2] += client
        sums[3] += server
        sums[4] += limited
        sums[5] += refused
        zeros += add_stored_sketch(bins, latency)
    total.requests += sums[0]
    total.success += sums[1]
    total.client_errors += sums[2]
    total.server_errors += sums[3]
    total.rate_limited += sums[4]
    total.refused += sums[5]
    sketch.bins, sketch.zeros = bins, zeros
    return total


#: What PostgreSQL's `totals` selects per part of a range: its bucket count, its counters summed
#: and its sketches back to back (one row per part, not one per bucket), for `add_aggregate`.
TOTAL_AGGREGATE_LIST = ", ".join(
    (
        "count(*)",
        *(f"coalesce(sum({c}), 0)::bigint" for c in COUNTER_FIELDS),
        "coalesce(string_agg(latency, ''::bytea), ''::bytea)",
    )
)


def add_aggregate(total: UsageCounters, row: Sequence[Any]) -> UsageCounters:
    """`total` with a row of `TOTAL_AGGREGATE_LIST` added (a part of a range's totals)."""
    count, requests, success, client, server, limited, refused, sketches = row
    if not count:
        return total
    total.requests += requests
    total.success += success
    total.client_errors += client
    total.server_errors += server
    total.rate_limited += limited
    total.refused += refused
    sketch = total.latency
    bins = dict(sketch.bins)
    sketch.zeros += add_stored_sketches(bins, bytes(sketches), count)
    sketch.bins = bins
    return total
