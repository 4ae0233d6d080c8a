"""Audit ingestion on real NATS: every request event becomes exactly one audit row.

Across a worker killed with SIGKILL (a subprocess, restarted), messages redelivered after a
commit whose acks were lost, a NATS server restart, and a store dropped to be rebuilt.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from nats.aio.msg import Msg

from adapters.settings import Settings
from cli.audit import audit
from projections.audit_chain import compare_rows
from projections.request_audit_query import RequestAuditStore
from projections.request_audit_store import open_request_audit_store
from support.audit_events import KEYS, WORKER, event_ids, make_batch, publish
from support.servers import NatsServer, env_with
from workers.audit_ingest import AuditIngester, AuditIngestSettings


def wait_for_rows(store: RequestAuditStore, expected: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    count = store.count()
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        count = store.count()
    return count


def intact(store: RequestAuditStore) -> bool:
    return all(report.broken is None for report in store.verify())


@pytest.fixture
def store(settings: Settings) -> Iterator[RequestAuditStore]:
    opened = open_request_audit_store(settings)
    yield opened
    opened.close()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=out, stderr=out)


def test_each_event_is_stored_once_across_worker_kills(
    store_env: dict[str, str],
    store: RequestAuditStore,
    private_nats: NatsServer,
    tmp_path: Path,
) -> None:
    batches = [make_batch(random.randint(30, 70)) for _ in range(300)]
    expected = {e.id for batch in batches for e in batch}
    # A few batches reach the stream twice (re-sent after the duplicate window): same events.
    republished = random.sample(batches, 10)
    asyncio.run(publish(private_nats.url, batches))  # a backlog the worker is draining
    env = env_with(**store_env, ICODRIP_NATS_URL=private_nats.url, ICODRIP_AUDIT_ACK_WAIT="2")
    env["ICODRIP_AUDIT_FETCH_BATCH"] = "8"  # many transactions: a kill lands mid-stream
    log = tmp_path / "worker.log"

    def kill_once_more_rows_than(count: int) -> int:
        deadline = time.monotonic() + 30
        while (now := store.count()) <= count and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.kill()  # SIGKILL: what it fetched and did not commit stays unacknowledged
        worker.wait(10)
        return now

    worker = start_worker(env, log)
    try:
        first = kill_once_more_rows_than(0)
        worker = start_worker(env, log)
        second = kill_once_more_rows_than(first + 500)
        worker = start_worker(env, log)
        asyncio.run(publish(private_nats.url, republished, msg_id_suffix="-again"))
        count = wait_for_rows(store, len(expected))
        time.sleep(0.5)  # room for a wrong extra row to appear
        count = store.count()
    finally:
        worker.terminate()
        worker.wait(15)

    assert 0 < first < second < len(expected), (first, second)  # both kills mid-stream
    assert count == len(expected), log.read_text()[-3000:]
    ids = event_ids(store)
    assert len(ids) == len(set(ids)) and set(ids) == expected
    assert intact(store)
    used = store.last_used([key for keys in KEYS.values() for key in keys])
    assert len(used) == sum(len(keys) for keys in KEYS.values())
    assert "audit.stopped" in log.read_text()  # SIGTERM: a clean stop


async def test_a_commit_whose_acks_were_lost_is_delivered_again_and_skipped(
    store: RequestAuditStore, private_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = [make_batch(25) for _ in range(12)]
    await publish(private_nats.url, batches)
    config = AuditIngestSettings(ack_wait=1.0, batch=5)

    async def lost(self: Msg) -> None:  # the worker dies between the commit and its acks
        return None

    def stop_when_all_stored(_: object) -> None:
        if first.counters.inserted >= 300:
            first.stop()

    with monkeypatch.context() as patch:
        patch.setattr(Msg, "ack", lost)
        first = AuditIngester(store, private_nats.url, config, on_commit=stop_when_all_stored)
        await first.run_until_caught_up(timeout=30)
    assert first.counters.inserted == 300 and store.count() == 300

    second = AuditIngester(store, private_nats.url, config)
    await second.run_until_caught_up(timeout=30)
    assert second.counters.messages >= 12  # every message came back...
    assert second.counters.inserted == 0  # ...and inserted nothing
    assert second.counters.duplicates >= 300
    assert store.count() == 300 and intact(store)


async def test_ingestion_carries_on_across_a_nats_restart(
    store: RequestAuditStore, private_nats: NatsServer
) -> None:
    batches = [make_batch(30) for _ in range(60)]
    ingester = AuditIngester(store, private_nats.url, AuditIngestSettings(ack_wait=2.0))
    stopping = asyncio.Event()
    running = asyncio.create_task(ingester.run(stopping))
    publishing = asyncio.create_task(publish(private_nats.url, batches, interval=0.02))
    await asyncio.sleep(0.6)
    await asyncio.to_thread(private_nats.kill)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(private_nats.start)
    await publishing
    count = await asyncio.to_thread(wait_for_rows, store, 30 * 60, 30.0)
    stopping.set()
    await asyncio.wait_for(running, 15)
    assert count == 1800
    assert len(set(event_ids(store))) == 1800 and intact(store)
    assert ingester.state == "stopped"


async def test_a_dropped_store_is_rebuilt_from_the_stream(
    settings: Settings, store: RequestAuditStore, private_nats: NatsServer
) -> None:
    await publish(private_nats.url, [make_batch(40) for _ in range(10)])
    await AuditIngester(store, private_nats.url).run_until_caught_up()
    assert store.count() == 400
    # The operator drops the model: a new, empty one, same consumer.
    fresh = open_request_audit_store(settings, "RequestAuditRebuilt")
    try:
        await AuditIngester(fresh, private_nats.url).run_until_caught_up()
        assert fresh.count() == 400 and intact(fresh)
        with store.rows_by_event_id(10**9) as live, fresh.rows_by_event_id(10**9) as rebuilt:
            comparison = compare_rows(live, rebuilt)
        assert not comparison.differs and comparison.reordered == 0
        assert fresh.heads() == store.heads()  # the same chains, hash for hash
    finally:
        fresh.drop()


def test_replay_compares_the_live_model_with_the_stream(
    store_env: dict[str, str], store: RequestAuditStore, private_nats: NatsServer
) -> None:
    batches = [make_batch(30) for _ in range(8)]
    asyncio.run(publish(private_nats.url, batches))
    asyncio.run(AuditIngester(store, private_nats.url).run_until_caught_up())
    env = {**store_env, "ICODRIP_NATS_URL": private_nats.url}
    if "ICODRIP_DATABASE_URL" not in env:
        env["ICODRIP_DATABASE_URL"] = None  # type: ignore[assignment]

    def replay() -> tuple[int, dict]:
        result = CliRunner().invoke(audit, ["replay", "--json"], env=env, obj={})
        return result.exit_code, json.loads(result.stdout)

    code, report = replay()
    assert code == 0, report
    assert report["identical"] and report["compared"] == 240 and report["replayed_events"] == 240

    victim, edited = batches[2][0], batches[5][3]
    sql = Sql(store_env)
    sql("DELETE FROM ROWS WHERE event_id = ?", victim.id)
    sql("UPDATE ROWS SET status = 299 WHERE event_id = ?", edited.id)
    code, report = replay()
    assert code == 1
    assert (report["missing_in_live"], report["changed"], report["extra_in_live"]) == (1, 1, 0)
    kinds = {e["event_id"]: e["kind"] for e in report["examples"]}
    assert kinds == {victim.id: "missing_in_live", edited.id: "changed"}


class Sql:
    def __init__(self, store_env: dict[str, str]) -> None:
        self.url = store_env.get("ICODRIP_DATABASE_URL")
        self.path = Path(store_env["ICODRIP_DATA_DIR"]) / "requestaudit.sqlite3"

    def __call__(self, statement: str, *params: object) -> None:
        if self.url is None:
            import sqlite3

            with sqlite3.connect(self.path) as conn:
                conn.execute(statement.replace("ROWS", "audit_rows"), params)
        else:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(
                    statement.replace("ROWS", "requestaudit_rows").replace("?", "%s"),  # type: ignore[arg-type]
                    params,
                )
