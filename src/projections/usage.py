"""Per-key usage: counters per key per minute, hour and day, with a mergeable latency sketch.

Pure (no I/O): the buckets (`Granularity`, aligned in UTC on the Unix epoch), the latency
sketch (`LatencySketch`, DDSketch-like: log-scale buckets with a fixed index function, so
sketches made by any process merge by adding counts), the counters of one bucket
(`UsageCounters`) and the fold of decoded audit entries into buckets (`fold_usage`). How long
each granularity is kept is `projections.usage_retention`; what a range's totals are read from,
`projections.usage_query.cover`; the durable store, `projections.usage_store`.

The model is fed the requests `projections.usage_events.decode_usage` decodes from the stream
(the fields of the request-audit model's `AuditEntry` that a count reads). Requests that name
no key, or no organization (401s for unknown, revoked or expired keys), belong to no key's
usage and are skipped.
"""

from __future__ import annotations

import enum
import itertools
import math
import operator
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec

from projections.request_audit import NO_ORG
from projections.usage_events import CountedRequest

# -- buckets ------------------------------------------------------------------------------------


class Granularity(enum.Enum):
    """A bucket size; its value is its length in seconds (also what the stores keep)."""

    MINUTE = 60
    HOUR = 3_600
    DAY = 86_400

    @property
    def seconds(self) -> int:
        """The bucket's length in seconds."""
        return int(self.value)

    @property
    def label(self) -> str:
        """The name the API and the CLI use (`minute`, `hour`, `day`)."""
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Granularity:
        """The granularity named `minute`, `hour` or `day`; ValueError otherwise."""
        try:
            return cls[label.upper()]
        except KeyError:
            raise ValueError(f"unknown granularity {label!r}") from None

    def align(self, at: float) -> int:
        """The start (Unix seconds) of the bucket holding `at`: UTC, since the epoch is."""
        size = int(self.value)
        return int(at // size) * size


#: From the finest to the coarsest.
GRANULARITIES = (Granularity.MINUTE, Granularity.HOUR, Granularity.DAY)


def iso(start: int) -> str:
    """A bucket start as ISO-8601 in UTC (`2026-03-01T12:34:00Z`)."""
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the latency sketch -------------------------------------------------------------------------
# Bucket i holds the latencies in (GAMMA^(i-1), GAMMA^i] ms and answers 2·GAMMA^i/(GAMMA+1):
# within RELATIVE_ACCURACY of any value in it. The index function depends on nothing but these
# constants, so two sketches merge exactly by adding counts. Changing them changes the meaning
# of every stored sketch: that is what SKETCH_VERSION is for.

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_INV_LOG_GAMMA = 1 / math.log(GAMMA)
#: Latencies below this (in ms) count as zero: the model rounds them to µs anyway.
MIN_TRACKED_MS = 0.001
SKETCH_VERSION = 1

_sketch_encoder = msgspec.msgpack.Encoder()
_sketch_decoder = msgspec.msgpack.Decoder(list[int])
_sketches_decoder = msgspec.msgpack.Decoder(list[list[int]])


def bucket_index(latency_ms: float) -> int:
    """The sketch bucket of a latency of at least `MIN_TRACKED_MS`."""
    return math.ceil(math.log(latency_ms) * _INV_LOG_GAMMA)


def bucket_value(index: int) -> float:
    """What a bucket answers: within the relative accuracy of every latency it holds."""
    return 2 * GAMMA**index / (GAMMA + 1)


class LatencySketch(msgspec.Struct, gc=False):
    """Latencies (ms) counted in log-scale buckets; equal sketches come from equal multisets."""

    zeros: int = 0
    bins: dict[int, int] = {}

    @property
    def count(self) -> int:
        """How many latencies were added."""
        return self.zeros + sum(self.bins.values())

    def add(self, latency_ms: float) -> None:
        """Count one latency."""
        if latency_ms < MIN_TRACKED_MS:
            self.zeros += 1
        else:
            index = bucket_index(latency_ms)
            self.bins[index] = self.bins.get(index, 0) + 1

    def merge(self, other: LatencySketch) -> None:
        """Add another sketch's counts to this one (the sketch of both multisets)."""
        self.zeros += other.zeros
        small, large = self.bins, other.bins
        if len(small) > len(large):
            small, large = large, small
        # Copy the larger (at C speed) and add the smaller to it: the roll-ups and stored
        # buckets merge small batches into large sketches.
        bins = dict(large)
        get = bins.get
        for index, n in small.items():
            bins[index] = get(index, 0) + n
        self.bins = bins

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile (0 ≤ q ≤ 1): the least latency that at least q·n of them
        do not exceed, within the relative accuracy; None if empty."""
        n = self.count
        if n == 0:
            return None
        # Rounded first: 0.95 * 100 is 95.00000000000001 in binary floating point.
        rank = max(1, math.ceil(round(q * n, 9)))
        seen = self.zeros
        if seen >= rank:
            return 0.0
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= rank:
                return bucket_value(index)
        return bucket_value(max(self.bins))  # q > 1: the largest

    def to_bytes(self) -> bytes:
        """Compact storage: msgpack [version, zeros, (index delta, count)…], indexes ascending."""
        indexes = sorted(self.bins)
        flat = [SKETCH_VERSION, self.zeros, *indexes, *indexes]
        # Small positive deltas: one msgpack byte each.
        flat[2::2] = map(operator.sub, indexes, [0, *indexes])
        flat[3::2] = map(self.bins.__getitem__, indexes)
        return _sketch_encoder.encode(flat)

    @classmethod
    def from_bytes(cls, data: bytes) -> LatencySketch:
        """The sketch `to_bytes` wrote; ValueError for anything else."""
        flat = _decode_sketch(data)
        return cls(flat[1], dict(zip(itertools.accumulate(flat[2::2]), flat[3::2], strict=True)))


def _decode_sketch(data: bytes) -> list[int]:
    """The flat list `LatencySketch.to_bytes` encoded; ValueError for anything else."""
    try:
        flat = _sketch_decoder.decode(data)
    except msgspec.DecodeError as error:
        raise ValueError(f"not a latency sketch: {error}") from None
    if len(flat) < 2 or flat[0] != SKETCH_VERSION or len(flat) % 2:
        raise ValueError("not a latency sketch of this version")
    return flat


def add_stored_sketch(bins: dict[int, int], data: bytes) -> int:
    """Add the bins of a sketch `LatencySketch.to_bytes` wrote to `bins` (in place) and return
    its count of zeros; ValueError for anything else.

    The totals of a range merge tens of thousands of stored sketches: this makes no sketch per
    stored one and no copy of the growing bins (`LatencySketch.merge` copies the larger side).
    """
    flat = _decode_sketch(data)
    get = bins.get
    for index, n in zip(itertools.accumulate(flat[2::2]), flat[3::2], strict=True):
        bins[index] = get(index, 0) + n
    return flat[1]


def add_stored_sketches(bins: dict[int, int], data: bytes, count: int) -> int:
    """Add `count` sketches stored back to back in `data` (each as `LatencySketch.to_bytes`
    wrote it: what PostgreSQL's `string_agg` of the column returns) to `bins` (in place) and
    return their count of zeros; ValueError for anything else.

    One decode for them all (as a msgpack array of `count` items), not one per stored sketch.
    """
    try:
        flats = _sketches_decoder.decode(b"\xdd" + count.to_bytes(4, "big") + data)
    except (msgspec.DecodeError, OverflowError) as error:
        raise ValueError(f"not {count} latency sketches: {error}") from None
    get = bins.get
    zeros = 0
    for flat in flats:
        if len(flat) < 2 or flat[0] != SKETCH_VERSION or len(flat) % 2:
            raise ValueError("not a latency sketch of this version")
        zeros += flat[1]
        for index, n in zip(itertools.accumulate(flat[2::2]), flat[3::2], strict=True):
            bins[index] = get(index, 0) + n
    return zeros


# -- counters -----------------------------------------------------------------------------------

#: The counters of a bucket, in the order of the stores' columns and the API's fields.
COUNTER_FIELDS = (
    "requests",
    "success",
    "client_errors",
    "server_errors",
    "rate_limited",
    "refused",
)
PERCENTILES = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))


class UsageCounters(msgspec.Struct, gc=False):
    """What one key did in one bucket. `rate_limited` (429) and `refused` (401, 403) are
    among the `client_errors` (4xx); 1xx and 3xx count as requests only."""

    env: str | None = None  # the key's environment (a key has one; not part of the bucket)
    requests: int = 0
    success: int = 0
    client_errors: int = 0
    server_errors: int = 0
    rate_limited: int = 0
    refused: int = 0
    latency: LatencySketch = msgspec.field(default_factory=LatencySketch)

    def count(self, status: int, latency_ms: float) -> None:
        """Count one request."""
        self.requests += 1
        if 200 <= status < 300:
            self.success += 1
        elif 400 <= status < 500:
            self.client_errors += 1
            if status == 429:
                self.rate_limited += 1
            elif status in (401, 403):
                self.refused += 1
        elif status >= 500:
            self.server_errors += 1
        self.latency.add(latency_ms)

    def merge(self, other: UsageCounters) -> None:
        """Add another bucket's counts (and its latencies) to this one."""
        self.requests += other.requests
        self.success += other.success
        self.client_errors += other.client_errors
        self.server_errors += other.server_errors
        self.rate_limited += other.rate_limited
        self.refused += other.refused
        self.latency.merge(other.latency)
        if self.env is None:
            self.env = other.env

    def counts(self) -> tuple[int, int, int, int, int, int]:
        """The counters in `COUNTER_FIELDS` order."""
        return (
            self.requests,
            self.success,
            self.client_errors,
            self.server_errors,
            self.rate_limited,
            self.refused,
        )

    def summary(self) -> dict[str, int | float | None]:
        """The API's totals: the counters, then p50/p95/p99 in ms (None without requests)."""
        fields: dict[str, int | float | None] = dict(
            zip(COUNTER_FIELDS, self.counts(), strict=True)
        )
        for name, q in PERCENTILES:
            value = self.latency.quantile(q)
            fields[name] = None if value is None else round(value, 3)
        return fields


class UsageKey(NamedTuple):
    """A bucket of one key: its organization, key, granularity and start (Unix seconds)."""

    org_id: str
    key_id: str
    granularity: Granularity
    start: int


# -- the fold -----------------------------------------------------------------------------------


def fold_minutes(entries: Iterable[CountedRequest]) -> dict[tuple[str, str, int], UsageCounters]:
    """Each keyed entry counted in its minute: (org_id, key_id, minute start) → counters."""
    cells: dict[tuple[str, str, int], UsageCounters] = {}
    get = cells.get
    log, ceil, inv = math.log, math.ceil, _INV_LOG_GAMMA
    # The hot loop of ingestion (≥ 50k events/s): `UsageCounters.count` inlined, one tuple
    # and at most one dict update per entry.
    for entry in entries:
        key_id = entry.key_id
        org_id = entry.org_id
        if key_id is None or org_id is None or org_id == NO_ORG:
            continue
        cell_key = (org_id, key_id, int(entry.occurred_at // 60) * 60)
        cell = get(cell_key)
        if cell is None:
            cell = cells[cell_key] = UsageCounters(env=entry.env)
        cell.requests += 1
        status = entry.status
        if 200 <= status < 300:
            cell.success += 1
        elif 400 <= status < 500:
            cell.client_errors += 1
            if status == 429:
                cell.rate_limited += 1
            elif status == 401 or status == 403:  # cheaper than building a tuple per entry
                cell.refused += 1
        elif status >= 500:
            cell.server_errors += 1
        latency = round(entry.latency_ms, 3)  # as the audit model stores it
        sketch = cell.latency
        if latency < MIN_TRACKED_MS:
            sketch.zeros += 1
        else:
            index = ceil(log(latency) * inv)
            bins = sketch.bins
            bins[index] = bins.get(index, 0) + 1
    return cells


def roll_up(minutes: dict[tuple[str, str, int], UsageCounters]) -> dict[UsageKey, UsageCounters]:
    """The minute cells and, merged from them, their hour and day buckets."""
    folded: dict[UsageKey, UsageCounters] = {}
    hour, day = Granularity.HOUR, Granularity.DAY
    for (org_id, key_id, minute), cell in minutes.items():
        folded[UsageKey(org_id, key_id, Granularity.MINUTE, minute)] = cell
        for granularity, size in ((hour, 3_600), (day, 86_400)):
            key = UsageKey(org_id, key_id, granularity, minute - minute % size)
            total = folded.get(key)
            if total is None:
                total = folded[key] = UsageCounters(env=cell.env)
            total.merge(cell)
    return folded


def fold_usage(entries: Iterable[CountedRequest]) -> dict[UsageKey, UsageCounters]:
    """Every keyed entry counted in its minute, hour and day buckets.

    Each entry lands in exactly one minute, and hours and days are merged from the minutes,
    so a roll-up equals the sum of its minutes by construction.
    """
    return roll_up(fold_minutes(entries))


def merge_into(
    target: dict[UsageKey, UsageCounters], batch: dict[UsageKey, UsageCounters]
) -> dict[UsageKey, UsageCounters]:
    """`target` with every bucket of `batch` merged in (a bucket of both is summed)."""
    for key, cell in batch.items():
        existing = target.get(key)
        if existing is None:
            target[key] = cell
        else:
            existing.merge(cell)
    return target
