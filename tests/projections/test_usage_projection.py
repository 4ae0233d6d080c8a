"""The usage model as a projection: `icodrip projections status` lists it with its lag behind
the stream, and a rebuild counts the stream again into the next generation — the same buckets,
latencies and totals as the live copy — then switches readers and the worker over to it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from adapters.settings import Settings
from bootstrap.projections import PROJECTION_NAMES, assemble_projections
from bootstrap.workers import run_usage
from cli.main import cli
from projections.generation_store import open_generation_store
from projections.generations import POINTER_CHECK_SECONDS
from projections.rebuilds import RebuildProgress
from projections.usage import GRANULARITIES, Granularity
from projections.usage_live import USAGE, LiveUsageStore
from projections.usage_query import DEFAULT_NAME, UsageQuery, UsageRow
from projections.usage_report import UsageReader
from projections.usage_store import open_usage_store
from support.audit_events import ORGS, consumer_drained, make_batch, publish
from support.servers import NatsServer
from workers.audit_ingest import AuditIngester, AuditIngestSettings

USAGE_CONSUMER = AuditIngestSettings(durable="icodrip-usage", label="usage")
DAY = Granularity.DAY


def invoke(env: dict[str, Any], *args: str) -> Result:
    return CliRunner().invoke(cli, ["projections", *args], env=env)


@pytest.fixture
def env(store_env: dict[str, str], private_nats: NatsServer) -> dict[str, Any]:
    values: dict[str, Any] = {**store_env, "ICODRIP_NATS_URL": private_nats.url}
    values.setdefault("ICODRIP_DATABASE_URL", None)  # CliRunner unsets a None
    return values


@pytest.fixture
def live_settings(settings: Settings, private_nats: NatsServer) -> Settings:
    return dataclasses.replace(settings, nats_url=private_nats.url)


def window() -> tuple[int, int]:
    """From yesterday to tomorrow (whole days): every bucket of the test's events."""
    today = DAY.align(time.time())
    return today - DAY.seconds, today + 2 * DAY.seconds


def snapshot(store: UsageReader) -> dict[Any, Any]:
    """Every bucket of the test's organizations at every granularity, and their totals."""
    lo, hi = window()
    found: dict[Any, Any] = {}
    for org in ORGS:
        for granularity in GRANULARITIES:
            query = UsageQuery(org, granularity, lo, hi)
            rows: list[UsageRow] = []
            while page := store.query(query, 500):
                rows.extend(page)
                query = dataclasses.replace(query, after=page[-1].cursor)
            found[org, granularity.label] = rows
        found[org, "totals"] = store.totals(org, lo, hi)
    return found


def keyed_events(batches: list[list[Any]]) -> int:
    return sum(1 for batch in batches for e in batch if e.key_id is not None)


def live_generation(settings: Settings) -> tuple[int, str]:
    pointers = open_generation_store(settings)
    try:
        live = pointers.live(USAGE, DEFAULT_NAME)
        return live.number, live.view_name
    finally:
        pointers.close()


def copy_exists(settings: Settings, name: str) -> bool:
    if settings.is_embedded:
        return (settings.data_dir / f"{name.lower()}.sqlite3").exists()
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = %s",
            (f"{name.lower()}_counters",),
        ).fetchone()
    return bool(row and row[0])


def ingest(settings: Settings, url: str) -> None:
    """What the usage worker does: bring the live copy to the stream's head."""
    store = open_usage_store(settings)
    try:
        asyncio.run(AuditIngester(store, url, USAGE_CONSUMER).run_until_caught_up())
    finally:
        store.close()


@pytest.fixture
def reader(settings: Settings) -> Iterator[LiveUsageStore]:
    """What the API and `icodrip usage` read through."""
    opened = LiveUsageStore(settings)
    yield opened
    opened.close()


# -- status ---------------------------------------------------------------------------------


def test_usage_is_a_projection() -> None:
    assert USAGE == "usage" and USAGE in PROJECTION_NAMES
    help_text = CliRunner().invoke(cli, ["projections", "rebuild", "--help"]).output
    assert "usage" in help_text


def test_status_lists_usage_with_its_lag_behind_the_stream(
    env: dict[str, Any], settings: Settings, private_nats: NatsServer
) -> None:
    batches = [make_batch(random.randint(5, 15)) for _ in range(7)]
    asyncio.run(publish(private_nats.url, batches[:4]))
    ingest(settings, private_nats.url)
    asyncio.run(publish(private_nats.url, batches[4:]))

    result = invoke(env, "status", "--json")
    assert result.exit_code == 0, result.output
    (usage,) = [d for d in json.loads(result.stdout)["data"] if d["name"] == USAGE]
    assert (usage["generation"], usage["view"]) == (1, DEFAULT_NAME)
    assert (usage["position"], usage["head"], usage["lag"]) == (4, 7, 3)
    store = open_usage_store(settings)
    try:
        assert usage["rows"] == store.count() > 0
    finally:
        store.close()
    assert usage["source"] == "stream ICODRIP_AUDIT" and "stream_error" not in usage["details"]
    assert usage["worker"]["name"] == "usage" and usage["worker"]["running"] is False

    status = assemble_projections(dataclasses.replace(settings, nats_url=private_nats.url))
    assert status[USAGE].status().lag == 3  # the same, from the projection itself
    table = invoke(env, "status")
    assert table.exit_code == 0
    (line,) = [ln for ln in table.stdout.splitlines() if ln.startswith("usage ")]
    assert DEFAULT_NAME in line and "not running" in line


# -- rebuild --------------------------------------------------------------------------------


def test_a_rebuild_counts_the_same_buckets_into_a_new_generation_and_switches(
    env: dict[str, Any],
    settings: Settings,
    private_nats: NatsServer,
    reader: LiveUsageStore,
) -> None:
    batches = [make_batch(random.randint(20, 40)) for _ in range(25)]
    asyncio.run(publish(private_nats.url, batches))
    ingest(settings, private_nats.url)
    before = snapshot(reader)
    assert sum(before[org, "totals"].requests for org in ORGS) == keyed_events(batches)
    rows = reader.count()

    result = invoke(env, "rebuild", USAGE, "--grace", "0", "--batch-size", "3", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["generation"], report["view"]) == (2, f"{DEFAULT_NAME}_g2")
    assert report["removed"] == DEFAULT_NAME and report["rows"] == rows
    assert report["position"] == 25 and report["events"] == keyed_events(batches)
    assert "events/s" in result.stderr  # progress
    assert live_generation(settings) == (2, f"{DEFAULT_NAME}_g2")
    assert not copy_exists(settings, DEFAULT_NAME) and copy_exists(settings, f"{DEFAULT_NAME}_g2")
    time.sleep(POINTER_CHECK_SECONDS + 0.1)  # readers re-read the pointer this often
    assert reader.name == f"{DEFAULT_NAME}_g2"  # and followed the switch
    assert snapshot(reader) == before  # the same buckets, counters, sketches and totals

    progress: list[RebuildProgress] = []
    again = assemble_projections(dataclasses.replace(settings, nats_url=private_nats.url))[
        USAGE
    ].rebuild(progress=progress.append, grace=0, batch_size=4)
    assert again.live.number == 3 and again.removed == f"{DEFAULT_NAME}_g2"
    assert progress and progress[-1].position == 25 and progress[-1].fraction == 1.0
    assert [p.events for p in progress] == sorted(p.events for p in progress)
    time.sleep(POINTER_CHECK_SECONDS + 0.1)
    assert reader.name == f"{DEFAULT_NAME}_g3" and snapshot(reader) == before

    status = json.loads(invoke(env, "status", "--json").stdout)["data"]
    (usage,) = [d for d in status if d["name"] == USAGE]
    assert (usage["generation"], usage["lag"], usage["rows"]) == (3, 0, rows)


async def test_a_rebuild_under_live_ingestion_counts_every_event_once(
    live_settings: Settings,
    private_nats: NatsServer,
    reader: LiveUsageStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("ICODRIP_USAGE_DURABLE", raising=False)
    before = [make_batch(40) for _ in range(40)]
    during = [make_batch(40) for _ in range(30)]
    expected = keyed_events(before + during)
    await publish(private_nats.url, before)
    stopping = asyncio.Event()

    def counted() -> int:
        lo, hi = window()
        return sum(reader.totals(org, lo, hi).requests for org in ORGS)

    async def until(check: Callable[[], bool], timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(check):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    worker = asyncio.create_task(run_usage(live_settings, stopping))
    try:
        assert await until(lambda: counted() == keyed_events(before))
        traffic = asyncio.create_task(publish(private_nats.url, during, interval=0.02))
        report = await asyncio.to_thread(
            assemble_projections(live_settings)[USAGE].rebuild,
            progress=lambda p: time.sleep(0.005),
            grace=1.0,
            batch_size=10,
        )
        await traffic
        done = await until(lambda: counted() == expected)
        # Every message acknowledged: no redelivery can still add a count too many.
        drained = await consumer_drained(private_nats.url, USAGE_CONSUMER.durable)
        final = await asyncio.to_thread(counted)
        after = await asyncio.to_thread(snapshot, reader)
    finally:
        stopping.set()
        await asyncio.wait_for(worker, 30)

    assert report.live.number == 2 and report.removed == DEFAULT_NAME
    assert reader.name == f"{DEFAULT_NAME}_g2"
    assert done and drained and final == expected, (final, expected)
    logged = capsys.readouterr()  # stderr once the logging is configured, stdout before
    assert "usage.switched" in logged.out + logged.err  # the worker moved to the new copy
    # The rebuilt live copy is what counting the whole stream from scratch gives.
    scratch = open_usage_store(live_settings, "UsageScratch")
    try:
        await AuditIngester(
            scratch, private_nats.url, AuditIngestSettings(durable="scratch", label="scratch")
        ).run_until_caught_up()
        assert snapshot(scratch) == after
    finally:
        scratch.drop()
