"""The webhook delivery log, on SQLite and on PostgreSQL: idempotent enqueue, claims by lease
(earliest first, one per endpoint, safe with concurrent claimers), attempts and endpoint health,
retries, pages by cursor, byte-exact payloads, expiry notices, prune."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from uuid import UUID

import pytest
from eventsourcing.persistence import Tracking

from adapters.settings import Settings
from projections.webhook_deliveries import (
    EXCERPT_LIMIT,
    Attempt,
    Delivery,
    DeliveryLog,
    DeliveryStatus,
    ExpiryNotice,
    NewDelivery,
)
from projections.webhook_delivery_store import open_delivery_log

T0 = 1_780_000_000.0
DAY = 86_400.0
LEASE = 60.0
PENDING, SUCCEEDED, FAILED = DeliveryStatus.PENDING, DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED
ORG = uuid.uuid4()


def new(
    endpoint: UUID,
    at: float = 0.0,
    *,
    due: float | None = None,
    payload: bytes = b'{"type":"api_key.revoked"}',
    id_: str | None = None,
) -> NewDelivery:
    created = T0 + at
    return NewDelivery(
        id=id_ or "whd_" + uuid.uuid4().hex,
        endpoint_id=endpoint,
        org_id=ORG,
        msg_id="msg_" + uuid.uuid4().hex,
        event_type="api_key.revoked",
        payload=payload,
        created_at=created,
        next_attempt_at=created if due is None else T0 + due,
        give_up_at=created + 3 * DAY,
    )


def attempt(delivery: NewDelivery | Delivery, number: int, at: float, code: int | None) -> Attempt:
    error = None if code else "connection refused"
    return Attempt(delivery.id, number, T0 + at, code, 12.5, error, "" if code is None else "ok")


@pytest.fixture
def log(settings: Settings) -> Iterator[DeliveryLog]:
    opened = open_delivery_log(settings)
    yield opened
    opened.close()


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.id for d in deliveries]


def test_enqueueing_the_same_delivery_twice_counts_it_once(log: DeliveryLog) -> None:
    endpoint = uuid.uuid4()
    first, second = new(endpoint, 1), new(endpoint, 2)
    assert log.enqueue([first, first]) == 1
    assert log.enqueue([first, second]) == 1
    assert log.enqueue([]) == 0
    assert log.counts([endpoint])[endpoint] == {"pending": 2, "succeeded": 0, "failed": 0}
    stored = log.get(first.id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.next_attempt_at) == (PENDING, 0, T0 + 1)


def test_a_claim_gives_the_earliest_due_first_and_one_per_endpoint(log: DeliveryLog) -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    a1, a2 = new(a, 1), new(a, 2)
    b1 = new(b, 0, due=5)
    c1, c_later = new(c, 3), new(c, 4, due=1000)
    log.enqueue([c_later, a2, b1, c1, a1])
    claimed = log.claim_due(T0 + 10, lease=LEASE, limit=10)
    assert ids(claimed) == [a1.id, c1.id, b1.id]  # by next_attempt_at: 1, 3, 5
    assert [d.status for d in claimed] == [PENDING] * 3
    # a2 waits while a1 is in flight; c's next one is not due yet.
    assert log.claim_due(T0 + 11, lease=LEASE, limit=10) == []
    log.record_attempt(attempt(a1, 1, 12, 200), status=SUCCEEDED, next_attempt_at=None)
    assert ids(log.claim_due(T0 + 13, lease=LEASE, limit=10)) == [a2.id]


def test_a_claim_takes_at_most_its_limit_breaking_ties_by_creation_then_id(
    log: DeliveryLog,
) -> None:
    endpoints = [uuid.uuid4() for _ in range(4)]
    batch = [new(e, 10 - i, due=0, id_=f"whd_{i:032x}") for i, e in enumerate(endpoints)]
    batch.append(new(endpoints[0], 7, due=0, id_="whd_" + "0" * 31 + "9"))
    log.enqueue(batch)
    first = log.claim_due(T0, lease=LEASE, limit=2)
    assert ids(first) == [batch[3].id, batch[4].id]  # both created at 7: "…03" < "…09"
    # batch[0] waits behind batch[4], of the same endpoint.
    assert ids(log.claim_due(T0, lease=LEASE, limit=10)) == [batch[2].id, batch[1].id]


def test_a_leased_delivery_is_claimed_again_only_after_its_lease_passes(
    log: DeliveryLog, settings: Settings
) -> None:
    endpoint = uuid.uuid4()
    delivery, behind = new(endpoint, 0), new(endpoint, 1)
    log.enqueue([delivery, behind])
    assert ids(log.claim_due(T0 + 5, lease=LEASE, limit=10)) == [delivery.id]
    # The worker is killed mid-delivery: nothing is recorded, the lease runs out.
    restarted = open_delivery_log(settings)
    try:
        assert restarted.claim_due(T0 + 5 + LEASE - 1, lease=LEASE, limit=10) == []
        again = restarted.claim_due(T0 + 5 + LEASE, lease=LEASE, limit=10)
        assert ids(again) == [delivery.id]  # the same one first: the endpoint's order holds
        assert (again[0].status, again[0].attempts) == (PENDING, 0)
    finally:
        restarted.close()


def test_two_concurrent_claimers_never_get_the_same_delivery(
    log: DeliveryLog, settings: Settings
) -> None:
    endpoints = [uuid.uuid4() for _ in range(150)]
    firsts = [new(e, 0) for e in endpoints]
    log.enqueue([*firsts, *(new(e, 1) for e in endpoints)])
    claims: list[Delivery] = []
    errors: list[Exception] = []
    guard = threading.Lock()
    start = threading.Barrier(2)

    def work(worker: DeliveryLog) -> None:
        start.wait()
        try:
            # Nothing is recorded: every claim holds its lease, as workers still sending would.
            while claimed := worker.claim_due(T0 + 1, lease=LEASE, limit=5):
                with guard:
                    claims.extend(claimed)
        except Exception as error:  # a claim that fails under contention fails the test
            errors.append(error)

    second = open_delivery_log(settings)  # another worker process's connections
    try:
        threads = [threading.Thread(target=work, args=(w,)) for w in (log, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        second.close()
    assert errors == []
    assert len(claims) == len(set(ids(claims)))
    # One in flight per endpoint, and it is the endpoint's first.
    assert sorted(ids(claims)) == sorted(d.id for d in firsts)


def test_record_attempt_moves_a_delivery_through_retries_to_succeeded(log: DeliveryLog) -> None:
    delivery = new(uuid.uuid4())
    log.enqueue([delivery])
    log.claim_due(T0, lease=LEASE, limit=1)
    log.record_attempt(attempt(delivery, 1, 1, 500), status=PENDING, next_attempt_at=T0 + 5)
    assert log.claim_due(T0 + 4, lease=LEASE, limit=1) == []  # released, but not due yet
    [claimed] = log.claim_due(T0 + 5, lease=LEASE, limit=1)
    assert claimed.attempts == 1
    log.record_attempt(attempt(delivery, 2, 6, None), status=PENDING, next_attempt_at=T0 + 60)
    log.record_attempt(attempt(delivery, 3, 61, 204), status=SUCCEEDED, next_attempt_at=None)
    # Recording an attempt number again (a worker retrying its write) changes nothing.
    log.record_attempt(attempt(delivery, 2, 99, 500), status=PENDING, next_attempt_at=T0 + 99)
    done = log.get(delivery.id)
    assert done is not None
    assert (done.status, done.attempts, done.next_attempt_at) == (SUCCEEDED, 3, None)
    assert (done.last_attempt_at, done.last_status_code, done.last_error) == (T0 + 61, 204, None)
    history = log.attempts([delivery.id])[delivery.id]
    assert [(a.number, a.at, a.status_code) for a in history] == [
        (1, T0 + 1, 500),
        (2, T0 + 6, None),
        (3, T0 + 61, 204),
    ]
    assert history[1].error == "connection refused"
    assert log.claim_due(T0 + 1000, lease=LEASE, limit=1) == []


def test_record_attempt_gives_a_delivery_up_as_failed(log: DeliveryLog) -> None:
    delivery = new(uuid.uuid4())
    log.enqueue([delivery])
    log.record_attempt(attempt(delivery, 1, 1, 503), status=FAILED, next_attempt_at=None)
    failed = log.get(delivery.id)
    assert failed is not None
    assert (failed.status, failed.attempts, failed.last_status_code) == (FAILED, 1, 503)
    assert log.claim_due(T0 + DAY, lease=LEASE, limit=1) == []
    assert log.attempts([delivery.id, "whd_unknown"]) == {
        delivery.id: [attempt(delivery, 1, 1, 503)],
        "whd_unknown": [],
    }


def test_an_attempt_keeps_only_an_excerpt_of_the_response(log: DeliveryLog) -> None:
    delivery = new(uuid.uuid4())
    log.enqueue([delivery])
    long = Attempt(delivery.id, 1, T0, 200, 1.0, None, "é" * (EXCERPT_LIMIT * 4))
    log.record_attempt(long, status=SUCCEEDED, next_attempt_at=None)
    [stored] = log.attempts([delivery.id])[delivery.id]
    assert stored.excerpt == "é" * EXCERPT_LIMIT


def test_failing_since_is_set_on_the_first_failure_and_cleared_by_a_success(
    log: DeliveryLog,
) -> None:
    endpoint, other = uuid.uuid4(), uuid.uuid4()
    first, second = new(endpoint, 0), new(endpoint, 1)
    log.enqueue([first, second, new(other, 0)])
    assert log.failing_since(endpoint) is None
    log.record_attempt(attempt(first, 1, 10, 500), status=PENDING, next_attempt_at=T0 + 20)
    log.record_attempt(attempt(first, 2, 20, None), status=FAILED, next_attempt_at=None)
    log.record_attempt(attempt(second, 1, 30, 502), status=PENDING, next_attempt_at=T0 + 40)
    assert log.failing_since(endpoint) == T0 + 10
    assert log.failing_since(other) is None
    log.record_attempt(attempt(second, 2, 40, 200), status=SUCCEEDED, next_attempt_at=None)
    assert log.failing_since(endpoint) is None
    log.record_attempt(attempt(first, 3, 50, 500), status=FAILED, next_attempt_at=None)
    assert log.failing_since(endpoint) == T0 + 50
    log.forget_endpoint_health(endpoint)
    assert log.failing_since(endpoint) is None


def test_a_retry_of_a_failed_delivery_makes_it_due_now(log: DeliveryLog) -> None:
    delivery = new(uuid.uuid4())
    log.enqueue([delivery])
    log.record_attempt(attempt(delivery, 1, 1, 500), status=FAILED, next_attempt_at=None)
    assert log.retry(delivery.id, T0 + DAY, give_up_at=T0 + 4 * DAY)
    retried = log.get(delivery.id)
    assert retried is not None
    assert (retried.status, retried.next_attempt_at) == (PENDING, T0 + DAY)
    assert (retried.give_up_at, retried.attempts) == (T0 + 4 * DAY, 1)
    [claimed] = log.claim_due(T0 + DAY, lease=LEASE, limit=1)
    assert claimed.id == delivery.id
    assert not log.retry("whd_" + uuid.uuid4().hex, T0, give_up_at=T0 + DAY)


def test_deliveries_pages_newest_first_with_the_cursor(log: DeliveryLog) -> None:
    endpoint = uuid.uuid4()
    batch = [new(endpoint, i // 2, id_=f"whd_{i:032x}") for i in range(7)]  # pairs share a time
    log.enqueue([*batch, new(uuid.uuid4(), 3)])
    log.record_attempt(attempt(batch[4], 1, 9, 200), status=SUCCEEDED, next_attempt_at=None)
    newest_first = [d.id for d in reversed(batch)]
    pages: list[list[str]] = []
    cursor: tuple[float, str] | None = None
    while page := log.deliveries(endpoint, limit=3, before=cursor):
        pages.append(ids(page))
        cursor = (page[-1].created_at, page[-1].id)
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:]]
    assert ids(log.deliveries(endpoint, limit=10, status=SUCCEEDED)) == [batch[4].id]
    pending = log.deliveries(endpoint, limit=2, before=(T0 + 2, batch[5].id), status=PENDING)
    assert ids(pending) == [batch[3].id, batch[2].id]
    assert log.counts([endpoint])[endpoint] == {"pending": 6, "succeeded": 1, "failed": 0}


def test_payload_bytes_round_trip(log: DeliveryLog) -> None:
    payload = bytes(range(256)) + '{"name":"clé \\u0000"}'.encode()
    delivery = new(uuid.uuid4(), payload=payload)
    log.enqueue([delivery])
    stored = log.get(delivery.id)
    assert stored is not None
    assert stored.payload == payload
    assert type(stored.payload) is bytes
    [claimed] = log.claim_due(T0, lease=LEASE, limit=1)
    assert claimed.payload == payload
    assert log.deliveries(delivery.endpoint_id, limit=1)[0].payload == payload


def test_notices_are_replaced_cancelled_due_and_dropped(log: DeliveryLog) -> None:
    key, other = uuid.uuid4(), uuid.uuid4()
    expires = T0 + 30 * DAY
    log.schedule_notices(key, ORG, expires, [("7d", expires - 7 * DAY), ("1d", expires - DAY)])
    log.schedule_notices(other, ORG, T0 + 9 * DAY, [("7d", T0 + 2 * DAY)])
    assert log.due_notices(T0 + 2 * DAY, 10) == [
        ExpiryNotice(other, ORG, "7d", T0 + 2 * DAY, T0 + 9 * DAY)
    ]
    # Replaced: the key now expires sooner and only its 1-day notice remains.
    log.schedule_notices(key, ORG, T0 + 5 * DAY, [("1d", T0 + 4 * DAY)])
    due = log.due_notices(T0 + 40 * DAY, 10)
    assert [(n.key_id, n.kind, n.due_at) for n in due] == [
        (other, "7d", T0 + 2 * DAY),
        (key, "1d", T0 + 4 * DAY),
    ]
    assert log.due_notices(T0 + 40 * DAY, 1) == due[:1]
    log.drop_notice(due[0])
    log.cancel_notices(key)
    assert log.due_notices(T0 + 40 * DAY, 10) == []


def test_a_rescheduled_notice_survives_the_drop_of_the_old_one(log: DeliveryLog) -> None:
    key = uuid.uuid4()
    log.schedule_notices(key, ORG, T0 + 8 * DAY, [("7d", T0 + DAY)])
    [old] = log.due_notices(T0 + DAY, 10)
    # The key's expiry moved while the old notice was being sent.
    log.schedule_notices(key, ORG, T0 + 9 * DAY, [("7d", T0 + 2 * DAY)])
    log.drop_notice(old)
    assert log.due_notices(T0 + 2 * DAY, 10) == [
        ExpiryNotice(key, ORG, "7d", T0 + 2 * DAY, T0 + 9 * DAY)
    ]


def test_prune_keeps_pending_deliveries(log: DeliveryLog) -> None:
    endpoint = uuid.uuid4()
    done, gave_up, waiting, recent = (new(endpoint, i) for i in range(4))
    log.enqueue([done, gave_up, waiting, recent])
    log.record_attempt(attempt(done, 1, 5, 200), status=SUCCEEDED, next_attempt_at=None)
    log.record_attempt(attempt(gave_up, 1, 5, 500), status=FAILED, next_attempt_at=None)
    log.record_attempt(attempt(waiting, 1, 5, 500), status=PENDING, next_attempt_at=T0 + 9)
    log.record_attempt(attempt(recent, 1, 5, 200), status=SUCCEEDED, next_attempt_at=None)
    assert log.prune(T0 + 3) == 2
    assert log.prune(T0 + 3) == 0
    assert ids(log.deliveries(endpoint, limit=10)) == [recent.id, waiting.id]
    history = log.attempts([done.id, gave_up.id, waiting.id])
    assert (history[done.id], history[gave_up.id], len(history[waiting.id])) == ([], [], 1)


def test_stream_positions_are_kept_beside_the_log(log: DeliveryLog, settings: Settings) -> None:
    assert log.max_tracking_id("icodrip-webhooks") is None
    log.insert_tracking(Tracking("icodrip-webhooks", 41))
    log.insert_tracking(Tracking("icodrip-webhooks", 42))
    reopened = open_delivery_log(settings)
    try:
        assert reopened.max_tracking_id("icodrip-webhooks") == 42
        assert reopened.max_tracking_id("icodrip-webhooks-requests") is None
    finally:
        reopened.close()
