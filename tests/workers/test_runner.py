"""The worker runner: workers start again after transient errors and leave heartbeats.

A worker process started before its store is usable (compose, or beside `icodrip serve`)
retries its start with backoff instead of exiting, and ingests once the store is there; a
non-transient error still ends the process (ADR 0014).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from eventsourcing import persistence
from structlog.testing import capture_logs

from adapters.settings import Settings
from application.stores import open_registry
from bootstrap import workers as assembled
from bootstrap.workers import run_workers
from domain.actors import OPERATOR
from domain.plans import Plan
from projections.generation_store import open_generation_store
from projections.live_key_lookup import open_key_lookup_view
from projections.request_audit_store import open_request_audit_store
from support.audit_events import make_batch, publish
from support.databases import POSTGRES_ADMIN_URL
from support.servers import NatsServer


def embedded(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"ICODRIP_KEY_PEPPER": "runner-test-pepper-" + uuid.uuid4().hex}, data_dir=tmp_path / "data"
    )


async def eventually(check: Callable[[], bool], timeout: float = 30.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError("not in time")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def states(settings: Settings, worker: str) -> set[str]:
    store = open_generation_store(settings)
    try:
        return {beat.state for beat in store.heartbeats(worker)}
    finally:
        store.close()


async def test_a_worker_failing_with_a_transient_error_starts_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = embedded(tmp_path)
    attempts: list[float] = []
    running = asyncio.Event()

    async def flaky(_: Settings, stopping: asyncio.Event) -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise persistence.IntegrityError("Failed to record tracking for __migration__ 1")
        running.set()
        await stopping.wait()

    monkeypatch.setitem(assembled.WORKERS, "flaky", flaky)
    stopping = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(
            run_workers(settings, ["flaky"], stopping=stopping, handle_signals=False)
        )
        await asyncio.wait_for(running.wait(), 10)
        await eventually(lambda: states(settings, "flaky") == {"running"})
        stopping.set()
        await asyncio.wait_for(task, 10)

    retries = [e for e in logs if e["event"] == "startup.retrying"]
    assert [(e["component"], e["attempt"], e["error"]) for e in retries] == [
        ("worker flaky", 1, "IntegrityError"),
        ("worker flaky", 2, "IntegrityError"),
    ]
    assert attempts[2] - attempts[1] > attempts[1] - attempts[0]  # backing off
    assert states(settings, "flaky") == {"stopped"}


async def test_a_non_transient_error_stops_every_worker_and_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = embedded(tmp_path)
    stopped: list[str] = []

    async def broken(_: Settings, stopping: asyncio.Event) -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("ICODRIP_NATS_URL is not set")

    async def steady(_: Settings, stopping: asyncio.Event) -> None:
        await stopping.wait()
        stopped.append("steady")

    monkeypatch.setitem(assembled.WORKERS, "broken", broken)
    monkeypatch.setitem(assembled.WORKERS, "steady", steady)
    with pytest.raises(RuntimeError, match="NATS_URL"):
        await asyncio.wait_for(
            run_workers(settings, ["broken", "steady"], handle_signals=False), 10
        )
    assert stopped == ["steady"]
    assert states(settings, "steady") == {"stopped"}


@pytest.mark.slow
async def test_workers_started_before_their_database_exists_retry_and_then_ingest(
    tmp_path: Path, private_nats: NatsServer
) -> None:
    """The database appears 6 s after the workers start (its pool waits 5 s per try)."""
    name = f"icodrip_late_{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    settings = Settings.from_env(
        {
            "ICODRIP_DATABASE_URL": url,
            "ICODRIP_KEY_PEPPER": "runner-test-pepper-" + uuid.uuid4().hex,
            "ICODRIP_NATS_URL": private_nats.url,
            "ICODRIP_KEYS_STREAM": f"KEYS_{uuid.uuid4().hex[:8]}",
        },
        data_dir=tmp_path / "data",
    )

    def admin(statement: str) -> None:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(statement)

    stopping = asyncio.Event()
    batch = make_batch(20)
    try:
        with capture_logs() as logs:
            task = asyncio.create_task(
                run_workers(
                    settings, ["key-lookup", "audit"], stopping=stopping, handle_signals=False
                )
            )
            await asyncio.sleep(6.0)
            assert not task.done(), task  # did not exit for want of a database
            await asyncio.to_thread(admin, f'CREATE DATABASE "{name}"')

            registry = await asyncio.to_thread(open_registry, settings)
            view = open_key_lookup_view(settings)
            audit = await asyncio.to_thread(open_request_audit_store, settings)
            try:
                await asyncio.to_thread(
                    registry.register_organization, "Late Org", Plan.PRO, OPERATOR
                )
                head = registry.recorder.max_notification_id()
                await publish(private_nats.url, [batch])
                await eventually(lambda: (view.max_tracking_id(registry.name) or 0) >= head)
                await eventually(lambda: audit.count() == len(batch))
            finally:
                view.close()  # type: ignore[attr-defined]
                audit.close()
                registry.close()
            assert not task.done(), task
            stopping.set()
            await asyncio.wait_for(task, 30)
    finally:
        stopping.set()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    retried = {e["component"] for e in logs if e["event"] == "startup.retrying"}
    assert "worker key-lookup" in retried, [e for e in logs if e["log_level"] != "info"]
