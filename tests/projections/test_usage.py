"""The usage model's pure part: buckets in UTC, status classes, roll-ups, the latency sketch,
the parts a range's totals are read from, and retention."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.request_events import new_event_id
from projections.request_audit import NO_ORG, AuditEntry
from projections.usage import (
    COUNTER_FIELDS,
    RELATIVE_ACCURACY,
    Granularity,
    LatencySketch,
    UsageCounters,
    UsageKey,
    fold_usage,
    iso,
    merge_into,
)
from projections.usage_query import UsageCursor, cover
from projections.usage_retention import UsageRetention

ORG = "org_" + "a" * 32
KEY = "key_" + "1" * 32
MINUTE, HOUR, DAY = Granularity.MINUTE, Granularity.HOUR, Granularity.DAY


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def entry(
    occurred_at: float = 0.0, status: int = 200, latency_ms: float = 2.5, **fields: Any
) -> AuditEntry:
    values: dict[str, Any] = {
        "org_id": ORG,
        "seq": 0,
        "event_id": new_event_id(),
        "request_id": new_event_id(),
        "key_id": KEY,
        "key_hint": None,
        "env": "live",
        "method": "GET",
        "route": "/v1/affiliates",
        "path": "/v1/affiliates",
        "status": status,
        "client_addr": None,
        "user_agent": None,
        "latency_ms": latency_ms,
        "occurred_at": occurred_at or at("2026-03-01T12:00:00"),
    }
    values.update(fields)
    return AuditEntry(**values)


def sketch_of(values: list[float]) -> LatencySketch:
    sketch = LatencySketch()
    for value in values:
        sketch.add(value)
    return sketch


# -- buckets ------------------------------------------------------------------------------------


def test_buckets_start_at_the_utc_minute_hour_and_day_holding_the_moment() -> None:
    moment = at("2026-03-01T23:59:59.999")
    assert iso(MINUTE.align(moment)) == "2026-03-01T23:59:00Z"
    assert iso(HOUR.align(moment)) == "2026-03-01T23:00:00Z"
    assert iso(DAY.align(moment)) == "2026-03-01T00:00:00Z"


def test_a_moment_on_a_day_boundary_opens_the_new_minute_hour_and_day() -> None:
    midnight = at("2026-03-02T00:00:00")
    assert {g: iso(g.align(midnight)) for g in Granularity} == dict.fromkeys(
        Granularity, "2026-03-02T00:00:00Z"
    )


def test_an_entry_counts_once_in_its_minute_its_hour_and_its_day() -> None:
    folded = fold_usage([entry(at("2026-03-01T23:59:59.5"))])
    assert {(k.granularity, iso(k.start)): c.requests for k, c in folded.items()} == {
        (MINUTE, "2026-03-01T23:59:00Z"): 1,
        (HOUR, "2026-03-01T23:00:00Z"): 1,
        (DAY, "2026-03-01T00:00:00Z"): 1,
    }


def test_granularities_are_parsed_by_their_api_names_only() -> None:
    assert [Granularity.parse(label) for label in ("minute", "hour", "day")] == list(Granularity)
    with pytest.raises(ValueError, match="unknown granularity"):
        Granularity.parse("week")


# -- counting -----------------------------------------------------------------------------------


def test_statuses_count_by_class_with_429s_and_401_403s_among_the_4xx() -> None:
    statuses = [200, 204, 301, 400, 401, 403, 404, 429, 500, 503]
    folded = fold_usage([entry(status=s) for s in statuses])
    minute = next(c for k, c in folded.items() if k.granularity is MINUTE)
    assert dict(zip(COUNTER_FIELDS, minute.counts(), strict=True)) == {
        "requests": 10,
        "success": 2,
        "client_errors": 5,
        "server_errors": 2,
        "rate_limited": 1,
        "refused": 2,
    }


def test_totals_carry_the_apis_counters_and_percentiles_in_ms() -> None:
    counters = UsageCounters()
    for latency in range(1, 101):
        counters.count(200, float(latency))
    summary = counters.summary()
    assert list(summary) == [*COUNTER_FIELDS, "p50_ms", "p95_ms", "p99_ms"]
    assert [summary["p50_ms"], summary["p95_ms"], summary["p99_ms"]] == [
        pytest.approx(50.0, rel=RELATIVE_ACCURACY),
        pytest.approx(95.0, rel=RELATIVE_ACCURACY),
        pytest.approx(99.0, rel=RELATIVE_ACCURACY),
    ]


def test_events_without_a_key_or_an_organization_belong_to_no_keys_usage() -> None:
    unknown_key = entry(status=401, key_id=None, org_id=NO_ORG, env=None)
    revoked_key = entry(status=401, org_id=NO_ORG)
    assert fold_usage([unknown_key, revoked_key]) == {}


def test_each_key_and_organization_has_buckets_of_its_own() -> None:
    other_key, other_org = "key_" + "2" * 32, "org_" + "b" * 32
    folded = fold_usage([entry(), entry(key_id=other_key), entry(org_id=other_org)])
    assert {(k.org_id, k.key_id) for k in folded} == {
        (ORG, KEY),
        (ORG, other_key),
        (other_org, KEY),
    }


def test_the_minutes_of_an_hour_sum_to_the_hour_and_the_hours_of_a_day_to_the_day() -> None:
    rng = random.Random(13)
    start = at("2026-03-01T00:00:00")
    entries = [
        entry(
            start + rng.uniform(0, 2 * 86_400),
            status=rng.choice([200, 201, 404, 429, 401, 500]),
            latency_ms=rng.lognormvariate(1, 1.5),
            key_id=rng.choice([KEY, "key_" + "2" * 32]),
        )
        for _ in range(5_000)
    ]
    folded = fold_usage(entries)
    for finer, coarser in ((MINUTE, HOUR), (HOUR, DAY)):
        sums: dict[UsageKey, UsageCounters] = {}
        for key, counters in folded.items():
            if key.granularity is finer:
                parent = key._replace(granularity=coarser, start=coarser.align(key.start))
                sums.setdefault(parent, UsageCounters(env=counters.env)).merge(counters)
        assert sums == {k: c for k, c in folded.items() if k.granularity is coarser}
    days = [c for k, c in folded.items() if k.granularity is DAY]
    assert sum(c.requests for c in days) == len(entries)


def test_batches_folded_apart_and_merged_equal_the_batches_folded_together() -> None:
    rng = random.Random(7)
    entries = [
        entry(at("2026-03-01T10:00:00") + rng.uniform(0, 7_200), latency_ms=rng.uniform(0, 900))
        for _ in range(2_000)
    ]
    apart = merge_into(fold_usage(entries[:700]), fold_usage(entries[700:]))
    assert apart == fold_usage(entries)


# -- the latency sketch -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_are_within_the_relative_accuracy_of_the_exact_ones(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(2, 1.2) for _ in range(20_000)] + [0.004, 45_000.0]
    sketch = sketch_of(values)
    exact = sorted(values)
    for q in (0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
        wanted = exact[max(1, math.ceil(round(q * len(exact), 9))) - 1]  # nearest rank
        estimate = sketch.quantile(q)
        assert estimate is not None
        assert abs(estimate - wanted) <= RELATIVE_ACCURACY * wanted * (1 + 1e-9), q


def test_latencies_under_a_microsecond_are_zero() -> None:
    sketch = sketch_of([0.0, 0.0, 0.0, 5.0])
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(1.0) == pytest.approx(5.0, rel=RELATIVE_ACCURACY)


def test_an_empty_sketch_has_no_percentiles() -> None:
    assert LatencySketch().quantile(0.5) is None
    assert UsageCounters().summary()["p99_ms"] is None


def test_merging_sketches_equals_the_sketch_of_the_union() -> None:
    rng = random.Random(5)
    left = [rng.expovariate(0.05) for _ in range(3_000)]
    right = [rng.uniform(0, 2_000) for _ in range(2_000)] + [0.0]
    merged = sketch_of(left)
    merged.merge(sketch_of(right))
    assert merged == sketch_of(left + right)


def test_a_sketch_reads_back_from_its_stored_bytes() -> None:
    rng = random.Random(9)
    sketch = sketch_of([0.0, *(rng.lognormvariate(0, 3) for _ in range(1_000))])
    stored = sketch.to_bytes()
    assert LatencySketch.from_bytes(stored) == sketch
    assert len(stored) < 4 * len(sketch.bins) + 8  # a few bytes per occupied bucket


def test_bytes_that_are_not_a_sketch_are_refused() -> None:
    for garbage in (b"", b"\x93\x01\x02\x03", b"not msgpack", LatencySketch().to_bytes()[:-1]):
        with pytest.raises(ValueError, match="not a latency sketch"):
            LatencySketch.from_bytes(garbage)


# -- reading a range ----------------------------------------------------------------------------


def test_a_range_is_read_from_its_whole_days_whole_hours_and_remaining_minutes() -> None:
    parts = cover(int(at("2026-03-01T22:58:00")), int(at("2026-03-03T01:02:00")))
    assert [(g.label, iso(lo), iso(hi)) for g, lo, hi in parts] == [
        ("minute", "2026-03-01T22:58:00Z", "2026-03-01T23:00:00Z"),
        ("hour", "2026-03-01T23:00:00Z", "2026-03-02T00:00:00Z"),
        ("day", "2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"),
        ("hour", "2026-03-03T00:00:00Z", "2026-03-03T01:00:00Z"),
        ("minute", "2026-03-03T01:00:00Z", "2026-03-03T01:02:00Z"),
    ]


def test_a_range_within_one_hour_is_read_from_its_minutes() -> None:
    lo, hi = int(at("2026-03-01T10:05:00")), int(at("2026-03-01T10:50:00"))
    assert cover(lo, hi) == [(MINUTE, lo, hi)]
    assert cover(lo, lo) == []


def test_a_range_must_start_and_end_on_whole_minutes() -> None:
    with pytest.raises(ValueError, match="whole minutes"):
        cover(int(at("2026-03-01T10:05:30")), int(at("2026-03-01T11:00:00")))


def test_a_page_cursor_reads_back_and_a_forged_one_is_refused() -> None:
    cursor = UsageCursor(KEY, int(at("2026-03-01T10:05:00")))
    assert UsageCursor.decode(cursor.encode()) == cursor
    too_far = UsageCursor(KEY, 2**63).encode()  # beyond a stored (64-bit) start
    too_long = UsageCursor("k" * 101, 0).encode()
    for forged in ("", "!!", "bm90IGpzb24", cursor.encode()[:-3], too_far, too_long):
        with pytest.raises(ValueError, match="not a usage cursor"):
            UsageCursor.decode(forged)


# -- retention ----------------------------------------------------------------------------------


def test_by_default_minutes_are_kept_7_days_hours_90_days_and_days_forever() -> None:
    now = at("2026-06-01T12:00:00")
    retention = UsageRetention()
    assert {g.label: retention.cutoff(g, now) for g in Granularity} == {
        "minute": at("2026-05-25T12:00:00"),
        "hour": at("2026-03-03T12:00:00"),
        "day": None,
    }
    assert not retention.is_expired(DAY, 0, now)


def test_a_bucket_expires_only_once_all_of_it_is_older_than_its_retention() -> None:
    retention = UsageRetention(hour_days=1)
    hour = int(at("2026-03-01T10:00:00"))
    assert not retention.is_expired(HOUR, hour, at("2026-03-02T10:59:59"))
    assert retention.is_expired(HOUR, hour, at("2026-03-02T11:00:00"))


def test_event_ids_are_forgotten_below_the_floor_of_their_retention() -> None:
    retention = UsageRetention(seen_event_days=7)
    now = at("2026-03-08T00:00:00")
    older = f"{int(at('2026-02-28T23:59:59') * 1000):012x}" + "0" * 20
    newer = f"{int(at('2026-03-01T00:00:01') * 1000):012x}" + "0" * 20
    assert older < retention.seen_floor(now) < newer


def test_the_retention_is_read_from_the_environment_in_days_or_forever() -> None:
    retention = UsageRetention.from_env(
        {
            "ICODRIP_USAGE_KEEP_MINUTES_DAYS": "2",
            "ICODRIP_USAGE_KEEP_HOURS_DAYS": "forever",
            "ICODRIP_USAGE_KEEP_DAYS_DAYS": "365",
            "ICODRIP_USAGE_KEEP_EVENT_IDS_DAYS": "0.5",
        }
    )
    assert retention == UsageRetention(
        minute_days=2, hour_days=None, day_days=365, seen_event_days=0.5
    )
    assert UsageRetention.from_env({}) == UsageRetention()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MINUTES", "a week"),
        ("HOURS", "-1"),
        ("DAYS", "0"),
        ("EVENT_IDS", "forever"),
    ],
)
def test_a_retention_that_is_no_number_of_days_is_refused_by_name(name: str, value: str) -> None:
    variable = f"ICODRIP_USAGE_KEEP_{name}_DAYS"
    with pytest.raises(ValueError, match=variable):
        UsageRetention.from_env({variable: value})
