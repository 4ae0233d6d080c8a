"""The usage worker on real NATS: every keyed request event is counted exactly once.

It consumes the request-event stream on a durable consumer of its own (`icodrip-usage`) beside
the audit worker's, so both models get every event; messages redelivered after a commit whose
acks were lost, or the same events published again, are counted once; a worker stopped (or
killed with SIGKILL) and started again resumes without losing or doubling a count; and it
prunes the buckets past their retention.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from adapters.request_events import AUDIT_STREAM, RequestEvent, RequestEventBatch
from adapters.settings import Settings
from bootstrap.workers import WORKERS, run_audit, run_usage
from projections.request_audit import Message, decode_messages
from projections.request_audit_query import RequestAuditStore
from projections.request_audit_store import open_request_audit_store
from projections.usage import Granularity
from projections.usage_query import UsageQuery, UsageStore
from projections.usage_store import open_usage_store
from support.audit_events import ORGS, consumer_drained, make_batch, publish
from support.request_events import request_event
from support.servers import NatsServer, env_with
from workers.audit_ingest import AuditIngester, AuditIngestSettings

USAGE_WORKER = """
import asyncio, signal
from adapters.logging import configure_logging
from adapters.settings import Settings
from bootstrap.workers import run_usage

async def main() -> None:
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await run_usage(Settings.from_env(), stopping)

configure_logging()
asyncio.run(main())
"""

MINUTE, HOUR, DAY = Granularity.MINUTE, Granularity.HOUR, Granularity.DAY


def keyed(batches: list[list[RequestEvent]]) -> Counter[tuple[str, str]]:
    """(org, key) → how many events the usage model should count (those that name a key)."""
    return Counter(
        (e.org_id, e.key_id)
        for batch in batches
        for e in batch
        if e.key_id is not None and e.org_id is not None
    )


def counted(store: UsageStore, granularity: Granularity = DAY) -> Counter[tuple[str, str]]:
    """(org, key) → the requests the store counted (of the test's organizations, ±1 day)."""
    size = granularity.seconds
    now = time.time()
    lo, hi = DAY.align(now) - DAY.seconds, DAY.align(now) + 2 * DAY.seconds
    found: Counter[tuple[str, str]] = Counter()
    for org in ORGS:
        query = UsageQuery(org, granularity, lo - lo % size, hi, None)
        while rows := store.query(query, 1000):
            for row in rows:
                found[(org, row.key_id)] += row.counters.requests
            query = dataclasses.replace(query, after=rows[-1].cursor)
    return found


def total(store: UsageStore) -> int:
    now = time.time()
    lo, hi = DAY.align(now) - DAY.seconds, DAY.align(now) + 2 * DAY.seconds
    return sum(store.totals(org, lo, hi).requests for org in ORGS)


def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def store(settings: Settings) -> Iterator[UsageStore]:
    opened = open_usage_store(settings)
    yield opened
    opened.close()


@pytest.fixture
def audit_store(settings: Settings) -> Iterator[RequestAuditStore]:
    opened = open_request_audit_store(settings)
    yield opened
    opened.close()


@pytest.fixture
def no_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers read their consumer settings from the environment: the defaults here."""
    for label in ("AUDIT", "USAGE"):
        for name in ("DURABLE", "FETCH_BATCH", "ACK_WAIT", "MAX_ACK_PENDING", "LINGER_MS"):
            monkeypatch.delenv(f"ICODRIP_{label}_{name}", raising=False)
    for name in ("MINUTES", "HOURS", "DAYS", "EVENT_IDS"):
        monkeypatch.delenv(f"ICODRIP_USAGE_KEEP_{name}_DAYS", raising=False)


def test_usage_is_a_worker_of_its_own() -> None:
    assert WORKERS["usage"] is run_usage
    config = AuditIngestSettings.from_env({}, label="usage")
    assert (config.durable, config.label) == ("icodrip-usage", "usage")
    assert AuditIngestSettings.from_env({}).durable == "icodrip-audit"


async def test_the_usage_and_audit_workers_each_get_every_event_on_their_own_durables(
    settings: Settings,
    store: UsageStore,
    audit_store: RequestAuditStore,
    private_nats: NatsServer,
    no_tuning: None,
) -> None:
    before = [make_batch(random.randint(20, 40)) for _ in range(20)]
    during = [make_batch(random.randint(20, 40)) for _ in range(20)]
    await publish(private_nats.url, before)
    live = dataclasses.replace(settings, nats_url=private_nats.url)
    stopping = asyncio.Event()
    workers = [
        asyncio.create_task(run_audit(live, stopping)),
        asyncio.create_task(run_usage(live, stopping)),
    ]
    everything = before + during
    events = sum(len(batch) for batch in everything)
    try:
        await publish(private_nats.url, during, interval=0.01)
        usage_done = await asyncio.to_thread(
            wait_until, lambda: total(store) == sum(keyed(everything).values())
        )
        audit_done = await asyncio.to_thread(wait_until, lambda: audit_store.count() == events)
    finally:
        stopping.set()
        await asyncio.wait_for(asyncio.gather(*workers), 30)
    assert usage_done and audit_done, (total(store), audit_store.count())
    assert counted(store) == keyed(everything)
    assert counted(store, MINUTE) == keyed(everything)  # the minutes add up to the days

    client = await nats.connect(private_nats.url)
    try:
        js = client.jetstream()
        last = (await js.stream_info(AUDIT_STREAM)).state.last_seq
        for durable in ("icodrip-audit", "icodrip-usage"):
            info = await js.consumer_info(AUDIT_STREAM, durable)
            assert info.num_pending == 0 and info.num_ack_pending == 0, durable
            assert info.ack_floor is not None and info.ack_floor.stream_seq == last, durable
    finally:
        await client.close()
    assert store.position() == last and audit_store.position() == last


async def test_redelivered_and_republished_events_are_counted_once(
    store: UsageStore, private_nats: NatsServer
) -> None:
    batches = [make_batch(25) for _ in range(12)]
    await publish(private_nats.url, batches)
    expected = keyed(batches)
    config = AuditIngestSettings(durable="icodrip-usage", label="usage", ack_wait=1.0, batch=5)

    async def lost(self: Msg) -> None:  # the worker dies between the commit and its acks
        return None

    def stop_when_all_counted(_: object) -> None:
        if first.counters.position >= 12:
            first.stop()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Msg, "ack", lost)
        first = AuditIngester(store, private_nats.url, config, on_commit=stop_when_all_counted)
        await first.run_until_caught_up(timeout=30)
    assert first.counters.inserted == sum(expected.values()) and counted(store) == expected

    second = AuditIngester(store, private_nats.url, config)
    await second.run_until_caught_up(timeout=30)
    assert second.counters.messages >= 12  # every message came back...
    assert second.counters.inserted == 0  # ...and counted nothing
    assert second.counters.duplicates == sum(expected.values())
    assert counted(store) == expected

    # The same events re-sent after the duplicate window: new messages, the same event ids.
    await publish(private_nats.url, batches[:4], msg_id_suffix="-again")
    third = AuditIngester(store, private_nats.url, config)
    await third.run_until_caught_up(timeout=30)
    assert third.counters.messages == 4 and third.counters.inserted == 0
    assert counted(store) == expected and store.position() == 16


async def test_a_stopped_worker_resumes_where_it_stopped(
    settings: Settings, store: UsageStore, private_nats: NatsServer, no_tuning: None
) -> None:
    live = dataclasses.replace(settings, nats_url=private_nats.url)
    first_part = [make_batch(30) for _ in range(30)]
    second_part = [make_batch(30) for _ in range(30)]

    stopping = asyncio.Event()
    worker = asyncio.create_task(run_usage(live, stopping))
    publishing = asyncio.create_task(publish(private_nats.url, first_part, interval=0.01))
    await asyncio.to_thread(wait_until, lambda: total(store) > 0)
    stopping.set()  # while events are still arriving
    await asyncio.wait_for(worker, 30)
    await publishing
    stopped_at = total(store)
    assert stopped_at > 0
    await publish(private_nats.url, second_part)  # published while no worker runs

    stopping = asyncio.Event()
    worker = asyncio.create_task(run_usage(live, stopping))
    expected = keyed(first_part + second_part)
    try:
        done = await asyncio.to_thread(wait_until, lambda: total(store) == sum(expected.values()))
        # Every message acknowledged: no redelivery can still add a count too many.
        drained = await consumer_drained(private_nats.url, "icodrip-usage")
    finally:
        stopping.set()
        await asyncio.wait_for(worker, 30)
    assert done and drained, (total(store), sum(expected.values()))
    assert counted(store) == expected and counted(store, HOUR) == expected


def test_each_event_is_counted_once_across_worker_kills(
    store_env: dict[str, str], store: UsageStore, private_nats: NatsServer, tmp_path: Path
) -> None:
    batches = [make_batch(random.randint(30, 70)) for _ in range(300)]
    expected = keyed(batches)
    republished = random.sample(batches, 10)  # re-sent after the duplicate window: same events
    asyncio.run(publish(private_nats.url, batches))  # a backlog the worker is draining
    env = env_with(**store_env, ICODRIP_NATS_URL=private_nats.url, ICODRIP_USAGE_ACK_WAIT="2")
    env["ICODRIP_USAGE_FETCH_BATCH"] = "8"  # many transactions: a kill lands mid-stream
    env.pop("ICODRIP_USAGE_DURABLE", None)
    log = tmp_path / "worker.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-c", USAGE_WORKER], env=env, stdout=out, stderr=out
            )

    def kill_once_more_than(count: int) -> int:
        wait_until(lambda: total(store) > count, 30)
        worker.kill()  # SIGKILL: what it fetched and did not commit stays unacknowledged
        worker.wait(10)
        return total(store)

    worker = start()
    try:
        first = kill_once_more_than(0)
        worker = start()
        second = kill_once_more_than(first + 500)
        worker = start()
        asyncio.run(publish(private_nats.url, republished, msg_id_suffix="-again"))
        wait_until(lambda: total(store) >= sum(expected.values()))
        # Every message acknowledged (the killed workers' too, redelivered after their ack
        # wait): no redelivery can still add a count too many.
        drained = asyncio.run(consumer_drained(private_nats.url, "icodrip-usage"))
        found = counted(store)
    finally:
        worker.terminate()
        worker.wait(15)

    assert 0 < first < second < sum(expected.values()), (first, second)  # both mid-stream
    assert drained, log.read_text()[-3000:]
    assert found == expected, log.read_text()[-3000:]
    assert counted(store, MINUTE) == expected
    assert "usage.stopped" in log.read_text()  # SIGTERM: a clean stop


async def test_the_worker_prunes_what_is_past_its_retention(
    settings: Settings,
    store: UsageStore,
    private_nats: NatsServer,
    monkeypatch: pytest.MonkeyPatch,
    no_tuning: None,
) -> None:
    monkeypatch.setenv("ICODRIP_USAGE_KEEP_MINUTES_DAYS", "1")
    monkeypatch.setenv("ICODRIP_USAGE_KEEP_HOURS_DAYS", "3")
    now = time.time()
    org, key = ORGS[0], "key_" + "5" * 32
    ages = {"now": 0.0, "2 days ago": 2 * 86_400.0, "5 days ago": 5 * 86_400.0}
    events = [request_event(org_id=org, key_id=key, occurred_at=now - age) for age in ages.values()]
    decoded, _ = decode_messages(
        [Message(0, msgspec.json.encode(RequestEventBatch(events=events)))]
    )
    store.write(decoded, 0)  # counted before the worker starts, at no stream position

    def starts(granularity: Granularity) -> list[int]:
        lo = DAY.align(now) - 10 * DAY.seconds
        query = UsageQuery(org, granularity, lo, DAY.align(now) + DAY.seconds)
        return [row.start for row in store.query(query, 100)]

    assert len(starts(MINUTE)) == len(starts(HOUR)) == 3
    live = dataclasses.replace(settings, nats_url=private_nats.url)
    stopping = asyncio.Event()
    worker = asyncio.create_task(run_usage(live, stopping))
    try:
        pruned = await asyncio.to_thread(wait_until, lambda: len(starts(MINUTE)) == 1, 20)
    finally:
        stopping.set()
        await asyncio.wait_for(worker, 30)
    assert pruned
    assert starts(MINUTE) == [MINUTE.align(now)]  # minutes: 1 day
    assert starts(HOUR) == [HOUR.align(now - 2 * 86_400), HOUR.align(now)]  # hours: 3 days
    assert len(starts(DAY)) == 3  # days: forever
