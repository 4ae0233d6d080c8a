"""The usage store, on SQLite and on PostgreSQL: buckets written and read back, idempotent by
event id, the stream position, one organization's rows only, pages by cursor, totals, prune."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.request_events import new_event_id
from adapters.settings import Settings
from projections.request_audit import AuditEntry, Decoded
from projections.usage import COUNTER_FIELDS, Granularity, iso
from projections.usage_query import UsageQuery, UsageStore
from projections.usage_retention import UsageRetention
from projections.usage_store import open_usage_store

ORG_A = f"org_{uuid.uuid4().hex}"
ORG_B = f"org_{uuid.uuid4().hex}"
KEY_1, KEY_2, KEY_3 = (f"key_{n}" + uuid.uuid4().hex for n in range(3))
MINUTE, HOUR, DAY = Granularity.MINUTE, Granularity.HOUR, Granularity.DAY


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


T0 = at("2026-03-01T10:00:00")
WEEKS_LATER = at("2026-03-20T00:00:00")


def entry(
    seconds: float = 0.0,
    status: int = 200,
    *,
    org: str = ORG_A,
    key: str = KEY_1,
    event_id: str | None = None,
    **fields: Any,
) -> AuditEntry:
    values: dict[str, Any] = {
        "org_id": org,
        "seq": 0,
        "event_id": event_id or new_event_id(),
        "request_id": new_event_id(),
        "key_id": key,
        "key_hint": None,
        "env": "live",
        "method": "GET",
        "route": "/v1/affiliates",
        "path": "/v1/affiliates",
        "status": status,
        "client_addr": None,
        "user_agent": None,
        "latency_ms": 3.0,
        "occurred_at": T0 + seconds,
    }
    values.update(fields)
    return AuditEntry(**values)


def counts(store: UsageStore, granularity: Granularity, org: str = ORG_A) -> dict[Any, int]:
    """(key, ISO start) → requests, for every bucket of the organization in 2026-03."""
    rows = store.query(UsageQuery(org, granularity, at("2026-03-01"), at("2026-04-01")), 10_000)
    return {(row.key_id, iso(row.start)): row.counters.requests for row in rows}


@pytest.fixture
def store(settings: Settings) -> Iterator[UsageStore]:
    opened = open_usage_store(settings)
    yield opened
    opened.close()


def test_buckets_read_back_with_their_counters_and_latencies(store: UsageStore) -> None:
    batch = [entry(1, 200, latency_ms=10.0), entry(2, 429), entry(3, 503, latency_ms=500.0)]
    result = store.write([(1, batch)], position=1)
    assert (result.counted, result.duplicates) == (3, 0)
    [row] = store.query(UsageQuery(ORG_A, MINUTE, T0, T0 + 60), 10)
    assert row.as_dict() == {
        "start": "2026-03-01T10:00:00Z",
        "key_id": KEY_1,
        "requests": 3,
        "success": 1,
        "client_errors": 1,
        "server_errors": 1,
        "rate_limited": 1,
        "refused": 0,
        "p50_ms": pytest.approx(10.0, rel=0.01),
        "p95_ms": pytest.approx(500.0, rel=0.01),
        "p99_ms": pytest.approx(500.0, rel=0.01),
    }


def test_later_batches_add_to_the_stored_buckets(store: UsageStore) -> None:
    store.write([(1, [entry(1, latency_ms=1.0), entry(61)])], position=1)
    store.write([(2, [entry(2, latency_ms=1000.0)])], position=2)
    assert counts(store, MINUTE) == {
        (KEY_1, "2026-03-01T10:00:00Z"): 2,
        (KEY_1, "2026-03-01T10:01:00Z"): 1,
    }
    assert counts(store, DAY) == {(KEY_1, "2026-03-01T00:00:00Z"): 3}
    [minute] = store.query(UsageQuery(ORG_A, MINUTE, T0, T0 + 60), 10)
    assert minute.counters.latency.quantile(1.0) == pytest.approx(1000.0, rel=0.01)


def test_a_batch_written_twice_counts_once(store: UsageStore) -> None:
    batch: Decoded = [(1, [entry(1), entry(2)]), (2, [entry(3)])]
    store.write(batch, position=2)
    again = store.write(batch, position=2)
    assert (again.counted, again.duplicates) == (0, 3)
    assert counts(store, HOUR) == {(KEY_1, "2026-03-01T10:00:00Z"): 3}


def test_an_event_published_again_in_another_message_counts_once(store: UsageStore) -> None:
    event = entry(1)
    store.write([(1, [event])], position=1)
    store.write([(7, [event, entry(2)]), (8, [event])], position=8)
    assert counts(store, MINUTE) == {(KEY_1, "2026-03-01T10:00:00Z"): 2}


def test_a_message_redelivered_after_newer_ones_still_counts(store: UsageStore) -> None:
    # After a worker crash the server redelivers what was not acknowledged after newer
    # messages: skipping by stream position would lose it.
    store.write([(2, [entry(2)])], position=2)
    store.write([(1, [entry(1)])], position=1)
    assert counts(store, MINUTE) == {(KEY_1, "2026-03-01T10:00:00Z"): 2}


def test_the_position_is_the_last_written_and_never_goes_back(store: UsageStore) -> None:
    assert store.position() == 0
    store.write([(5, [entry()])], position=5)
    assert store.write([(3, [entry()])], position=3).position == 5
    store.write([], position=9)  # a fetch of messages without keyed events moves it too
    assert store.position() == 9


def test_events_of_no_key_are_not_counted(store: UsageStore) -> None:
    result = store.write([(1, [entry(status=401, key=None, org="none")])], position=1)  # type: ignore[arg-type]
    assert (result.counted, store.count()) == (0, 0)


def test_another_organizations_buckets_are_never_returned(store: UsageStore) -> None:
    store.write([(1, [entry(1), entry(2, org=ORG_B, key=KEY_2), entry(3, org=ORG_B)])], 1)
    assert counts(store, MINUTE, ORG_A) == {(KEY_1, "2026-03-01T10:00:00Z"): 1}
    asking_for_b_keys = UsageQuery(ORG_A, MINUTE, T0, T0 + 60, key_ids=[KEY_2])
    assert store.query(asking_for_b_keys, 10) == []
    assert store.totals(ORG_A, T0, T0 + 60).requests == 1


def test_a_query_narrows_to_the_keys_and_the_environment_asked_for(store: UsageStore) -> None:
    store.write([(1, [entry(1), entry(2, key=KEY_2), entry(3, key=KEY_3, env="test")])], 1)
    some_keys = UsageQuery(ORG_A, MINUTE, T0, T0 + 60, key_ids=[KEY_1, KEY_3])
    test_keys = UsageQuery(ORG_A, MINUTE, T0, T0 + 60, env="test")
    no_keys = UsageQuery(ORG_A, MINUTE, T0, T0 + 60, key_ids=[])
    assert [r.key_id for r in store.query(some_keys, 10)] == sorted([KEY_1, KEY_3])
    assert [r.key_id for r in store.query(test_keys, 10)] == [KEY_3]
    assert store.query(no_keys, 10) == []


def test_a_query_returns_the_buckets_that_start_in_its_range(store: UsageStore) -> None:
    store.write([(1, [entry(-1), entry(0), entry(599), entry(600)])], 1)
    rows = store.query(UsageQuery(ORG_A, MINUTE, T0, T0 + 600), 10)
    assert [iso(r.start) for r in rows] == ["2026-03-01T10:00:00Z", "2026-03-01T10:09:00Z"]


def test_pages_follow_the_cursor_without_gaps_or_repeats(store: UsageStore) -> None:
    keys = [KEY_1, KEY_2, KEY_3]
    store.write([(1, [entry(m * 60, key=k) for k in keys for m in range(7)])], 1)
    query = UsageQuery(ORG_A, MINUTE, T0, T0 + 3_600)
    seen: list[tuple[str, int]] = []
    while page := store.query(query, 4):
        seen.extend((r.key_id, r.start) for r in page)
        query = UsageQuery(ORG_A, MINUTE, T0, T0 + 3_600, after=page[-1].cursor)
    assert seen == sorted((k, T0 + m * 60) for k in keys for m in range(7))


def test_totals_of_a_range_equal_the_sum_of_its_minutes(store: UsageStore) -> None:
    # 22:58 on the 1st to 01:02 on the 3rd: minutes, an hour, a whole day, an hour, minutes.
    start = at("2026-03-01T22:58:00")
    seconds = [0, 90, 150, 3_000, 40_000, 86_000, 93_000, 93_700, 93_800, 93_839, 93_840]
    batch = [
        entry(start - T0 + s, [200, 404, 429, 500][i % 4], latency_ms=1 + s / 100)
        for i, s in enumerate(seconds)
    ]
    store.write([(1, batch)], 1)
    end = at("2026-03-03T01:02:00")
    minutes = store.query(UsageQuery(ORG_A, MINUTE, start, end), 1_000)
    totals = store.totals(ORG_A, start, end)
    assert totals.requests == len(seconds) - 1  # the last one is at the (exclusive) end
    summed = [sum(getattr(r.counters, f) for r in minutes) for f in COUNTER_FIELDS]
    assert list(totals.counts()) == summed
    assert totals.latency.count == totals.requests


def test_prune_removes_expired_buckets_and_keeps_the_rest(store: UsageStore) -> None:
    old, recent = at("2026-03-01T10:00:00"), at("2026-03-20T10:00:00")
    store.write([(1, [entry(old - T0), entry(recent - T0)])], 1)
    now = at("2026-03-21T00:00:00")
    pruned = store.prune(UsageRetention(minute_days=7, hour_days=10, day_days=None), now)
    assert pruned.buckets == 4  # the old minute and hour, of the key and of its organization
    assert counts(store, MINUTE) == {(KEY_1, "2026-03-20T10:00:00Z"): 1}
    assert counts(store, HOUR) == {(KEY_1, "2026-03-20T10:00:00Z"): 1}
    assert counts(store, DAY) == {
        (KEY_1, "2026-03-01T00:00:00Z"): 1,
        (KEY_1, "2026-03-20T00:00:00Z"): 1,
    }


def test_a_replay_after_event_ids_were_forgotten_counts_nothing_again(
    store: UsageStore,
) -> None:
    # Ids minted at the events' own time, as the API does: forgotten once the stream is a
    # week further on.
    events = [entry(s, event_id=_id_at(T0 + s)) for s in (1, 2)]
    store.write([(1, events[:1]), (2, events[1:]), (3, [a_week_on()])], position=3)
    forgotten = store.prune(UsageRetention(seen_event_days=7), WEEKS_LATER, acked_through=3)
    assert forgotten.event_ids == 2
    replay = store.write([(1, events[:1]), (2, events[1:])], position=3)
    assert (replay.counted, replay.duplicates) == (0, 2)
    late = store.write([(4, [entry(3, event_id=_id_at(T0 + 3))])], position=4)
    assert late.counted == 1  # a new message: counted even though its id is below the floor
    assert counts(store, DAY)[(KEY_1, "2026-03-01T00:00:00Z")] == 3


def test_a_catch_up_of_old_messages_forgets_no_id_the_stream_has_not_moved_past(
    store: UsageStore,
) -> None:
    # A stream weeks old drained for the first time: by the wall clock every id is old, by
    # the stream's they are all recent, and a publisher's re-send is a few messages on.
    resent = entry(2, event_id=_id_at(T0 + 2))
    store.write([(1, [entry(1, event_id=_id_at(T0 + 1))]), (2, [resent])], position=2)
    assert store.prune(UsageRetention(seen_event_days=7), WEEKS_LATER, 2).event_ids == 0
    again = store.write([(5, [resent])], position=5)
    assert (again.counted, again.duplicates) == (0, 1)


def test_old_events_redelivered_out_of_order_after_a_prune_are_counted_once(
    store: UsageStore,
) -> None:
    # A first catch-up of a stream weeks old: message 3 is written first, messages 1 and 2
    # (handed to a worker that died) come back after it, after a prune.
    old = {seq: [entry(seq, event_id=_id_at(T0 + seq)) for _ in range(5)] for seq in (1, 2, 3)}
    store.write([(3, old[3])], position=3)
    store.prune(UsageRetention(seen_event_days=7), WEEKS_LATER, acked_through=0)
    redelivered = store.write([(1, old[1]), (2, old[2])], position=2)
    assert (redelivered.counted, redelivered.duplicates) == (10, 0)
    again = store.write([(1, old[1]), (2, old[2]), (3, old[3])], position=3)
    assert (again.counted, again.duplicates) == (0, 15)
    assert counts(store, DAY) == {(KEY_1, "2026-03-01T00:00:00Z"): 15}


def test_ids_are_forgotten_only_in_messages_the_consumer_acknowledged(store: UsageStore) -> None:
    events = {seq: [entry(seq, event_id=_id_at(T0 + seq))] for seq in (1, 2, 3)}
    events[4] = [a_week_on()]
    store.write([(seq, batch) for seq, batch in events.items()], position=4)
    retention = UsageRetention(seen_event_days=7)
    assert store.prune(retention, WEEKS_LATER).event_ids == 0  # no ack floor: none forgotten
    assert store.prune(retention, WEEKS_LATER, acked_through=2).event_ids == 2
    assert store.prune(retention, WEEKS_LATER, acked_through=9).event_ids == 1  # ≤ position
    again = store.write([(seq, batch) for seq, batch in events.items()], position=4)
    assert (again.counted, again.duplicates) == (0, 4)


def test_a_store_behind_the_consumer_forgets_no_id_it_has_not_written(
    store: UsageStore,
) -> None:
    # Restored from a backup: the consumer acknowledged messages the store no longer holds.
    store.write([(1, [entry(1, event_id=_id_at(T0 + 1))])], position=1)
    store.prune(UsageRetention(seen_event_days=7), WEEKS_LATER, acked_through=50)
    redelivered = store.write([(2, [entry(2, event_id=_id_at(T0 + 2))])], position=2)
    assert redelivered.counted == 1
    assert counts(store, DAY) == {(KEY_1, "2026-03-01T00:00:00Z"): 2}


def test_an_organizations_totals_are_its_keys_summed_and_never_listed_as_a_key(
    store: UsageStore,
) -> None:
    batch = [
        entry(s, status, key=key, env=env, latency_ms=float(s % 97) + 0.5)
        for s in range(0, 7_200, 7)
        for key, env, status in ((KEY_1, "live", 200), (KEY_2, "test", 429), (KEY_3, "live", 503))
    ]
    store.write([(1, batch)], 1)
    start, end = at("2026-03-01T09:30:00"), at("2026-03-01T11:10:00")
    for env in (None, "live", "test"):
        keys = [KEY_1, KEY_2, KEY_3]
        by_key = store.totals(ORG_A, start, end, keys, env)
        whole = store.totals(ORG_A, start, end, None, env)
        assert list(whole.counts()) == list(by_key.counts()), env
        assert whole.latency == by_key.latency, env
    assert store.totals(ORG_A, start, end, None, "live").rate_limited == 0
    listed = store.query(UsageQuery(ORG_A, HOUR, start, end), 100)
    assert {row.key_id for row in listed} == {KEY_1, KEY_2, KEY_3}
    assert store.count() == 3 * (120 + 2 + 1)  # the keys' minutes, hours and day


def test_two_writers_at_once_lose_no_count(settings: Settings, store: UsageStore) -> None:
    others = [open_usage_store(settings) for _ in range(2)]
    try:

        def write(writer: UsageStore, first_seq: int) -> None:
            for n in range(10):
                writer.write([(first_seq + n, [entry(s) for s in range(30)])], first_seq + n)

        threads = [threading.Thread(target=write, args=(w, 100 * i)) for i, w in enumerate(others)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for other in others:
            other.close()
    assert counts(store, HOUR) == {(KEY_1, "2026-03-01T10:00:00Z"): 600}
    [hour] = store.query(UsageQuery(ORG_A, HOUR, T0, T0 + 3_600), 1)
    assert hour.counters.latency.count == 600


def test_another_name_is_another_copy_and_drop_removes_it(
    settings: Settings, store: UsageStore
) -> None:
    store.write([(1, [entry()])], 1)
    copy = open_usage_store(settings, "Usage_g2")
    copy.write([(1, [entry(), entry()])], 1)
    assert (store.count(), copy.count()) == (3, 3)
    assert counts(copy, MINUTE) == {(KEY_1, "2026-03-01T10:00:00Z"): 2}
    copy.drop()
    reopened = open_usage_store(settings, "Usage_g2")
    try:
        assert (reopened.count(), reopened.position(), store.count()) == (0, 0, 3)
    finally:
        reopened.close()


def a_week_on() -> AuditEntry:
    """A request eight days after T0: the stream has moved a week past T0's events."""
    return entry(8 * 86_400, event_id=_id_at(T0 + 8 * 86_400))


def _id_at(seconds: float) -> str:
    """An event id as `new_event_id` makes them, minted at `seconds` (Unix)."""
    return f"{int(seconds * 1000):012x}" + uuid.uuid4().hex[:20]
