"""The store's wake-up: PostgreSQL's NOTIFY wakes a follower; losing it costs latency only.

On a real PostgreSQL: an event recorded by another registry (another connection, as another
process would) wakes `wait`; nothing recorded, `wait` times out; its LISTEN connection killed
(`pg_terminate_backend`) and kept from coming back, `wait` just sleeps, then it reconnects by
itself and wakes again. This also pins what ADR 0018 relies on in `eventsourcing.postgres`: the
recorder's `channel_name` and the NOTIFY in every insert. On the embedded store, and with
`ICODRIP_STORE_WAKEUP=0`, it never wakes. No assertion here depends on how fast the machine is:
a wake is told from the fallback by what `wait` returns, with fallbacks far beyond the test's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from structlog.testing import capture_logs

from adapters.settings import Settings
from adapters.store_wakeup import FALLBACK_POLL, StoreWakeup
from application.registry import KeyRegistry
from application.stores import open_registry
from domain.actors import OPERATOR
from domain.plans import Plan
from support.databases import POSTGRES_ADMIN_URL, fresh_database

#: Longer than any test here waits: a `wait` that returns True was woken, not timed out.
NEVER = 3600.0


def settings_for(tmp_path: Path, database_url: str | None, **extra: str) -> Settings:
    env = {"ICODRIP_KEY_PEPPER": "wakeup-test-pepper-" + uuid.uuid4().hex, **extra}
    if database_url:
        env["ICODRIP_DATABASE_URL"] = database_url
    return Settings.from_env(env, data_dir=tmp_path / "data")


@pytest.fixture
def database_url() -> Iterator[str]:
    with fresh_database("wakeup") as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return settings_for(tmp_path, database_url)


@pytest.fixture
def registry(settings: Settings) -> Iterator[KeyRegistry]:
    app = open_registry(settings)
    yield app
    app.close()


@pytest.fixture
async def wakeup(settings: Settings, registry: KeyRegistry) -> AsyncIterator[StoreWakeup]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    async with StoreWakeup.for_store(settings, registry.recorder, name=name) as started:
        yield started


async def record_elsewhere(settings: Settings) -> None:
    """Register an organization through a registry of its own (its own pool, as a process)."""

    def record() -> None:
        other = open_registry(settings)
        try:
            other.register_organization(f"Org {uuid.uuid4().hex[:6]}", Plan.PRO, OPERATOR)
        finally:
            other.close()

    await asyncio.to_thread(record)


def admin(statement: str, *params: object) -> list[tuple[object, ...]]:
    """Run `statement` on the server's admin database (the test's may refuse connections)."""
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        cursor = conn.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


def listening_backends(database_url: str, wakeup: StoreWakeup) -> list[tuple[object, ...]]:
    """(pid, query) of the wake-up's connections, found by its application name."""
    return admin(
        "SELECT pid, query FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        database_url.rsplit("/", 1)[1],
        f"icodrip-wakeup-{wakeup.name}",
    )


async def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not in time")
        await asyncio.sleep(0.05)


async def test_an_event_recorded_elsewhere_wakes_it(
    settings: Settings, registry: KeyRegistry, wakeup: StoreWakeup
) -> None:
    assert wakeup.listens and wakeup.listening
    assert wakeup.channel == registry.recorder.channel_name  # type: ignore[attr-defined]
    assert wakeup.poll_interval(0.05) == FALLBACK_POLL

    await record_elsewhere(settings)

    assert await asyncio.wait_for(wakeup.wait(NEVER), 60) is True
    assert wakeup.notifications >= 1 and wakeup.wakeups == 1


async def test_each_wake_is_consumed_and_nothing_recorded_means_a_timeout(
    settings: Settings, wakeup: StoreWakeup
) -> None:
    started = time.monotonic()
    assert await wakeup.wait(0.2) is False
    assert time.monotonic() - started >= 0.15  # it waited its timeout, no more asked

    await record_elsewhere(settings)
    assert await asyncio.wait_for(wakeup.wait(NEVER), 60) is True
    assert await wakeup.wait(0.2) is False  # that notification was consumed
    assert wakeup.wakeups == 1


async def test_a_stop_ends_the_wait_at_once(wakeup: StoreWakeup) -> None:
    stopping = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, stopping.set)
    assert await asyncio.wait_for(wakeup.wait(NEVER, until=stopping), 60) is False
    assert await asyncio.wait_for(wakeup.wait(NEVER, until=stopping), 60) is False  # still set


async def test_a_killed_connection_falls_back_to_sleeping_then_comes_back(
    settings: Settings, database_url: str, registry: KeyRegistry, wakeup: StoreWakeup
) -> None:
    database = database_url.rsplit("/", 1)[1]
    [(pid, query)] = listening_backends(database_url, wakeup)
    assert str(query).startswith("LISTEN")

    with capture_logs() as logs:
        # Killed, and kept from reconnecting while an event is recorded (through the registry's
        # pooled connection, opened before): nothing wakes it, `wait` sleeps its timeout.
        admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            admin("SELECT pg_terminate_backend(%s)", pid)
            await eventually(lambda: not wakeup.listening)
            await asyncio.to_thread(registry.register_organization, "Acme", Plan.PRO, OPERATOR)
            assert await wakeup.wait(0.5) is False
            # Meanwhile its follower polls as often as it would without a wake-up: a wait
            # for as long as it likes is cut to that (50 ms here, not an hour).
            wakeup.poll_interval(0.05)
            assert await asyncio.wait_for(wakeup.wait(NEVER), 30) is False
        finally:
            admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

        # Back by itself; the next wait returns at once for what it may have missed …
        await eventually(lambda: wakeup.connections == 2)
        assert await asyncio.wait_for(wakeup.wait(NEVER), 60) is True
        # … and new events wake it again.
        before = wakeup.notifications
        await record_elsewhere(settings)
        assert await asyncio.wait_for(wakeup.wait(NEVER), 60) is True
        assert wakeup.notifications > before

    events = [e for e in logs if e["event"].startswith("store_wakeup.")]
    assert [e["event"] for e in events] == ["store_wakeup.lost", "store_wakeup.recovered"]
    assert events[0]["follower"] == wakeup.name and events[0]["log_level"] == "warning"


async def test_closing_it_closes_its_connection(
    settings: Settings, database_url: str, registry: KeyRegistry
) -> None:
    wakeup = await StoreWakeup.open(settings, registry.recorder, name=uuid.uuid4().hex[:8])
    assert len(listening_backends(database_url, wakeup)) == 1
    await asyncio.wait_for(wakeup.aclose(), 10)
    assert not wakeup.listening
    await eventually(lambda: not listening_backends(database_url, wakeup))


async def test_on_the_embedded_store_it_only_sleeps(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, None)
    registry = open_registry(settings)
    try:
        async with StoreWakeup.for_store(settings, registry.recorder, name="embedded") as wakeup:
            assert not wakeup.listens and not wakeup.listening
            assert wakeup.poll_interval(0.05) == 0.05  # the loops keep today's intervals
            await asyncio.to_thread(registry.register_organization, "Acme", Plan.PRO, OPERATOR)
            started = time.monotonic()
            assert await wakeup.wait(0.2) is False
            assert time.monotonic() - started >= 0.15
    finally:
        registry.close()


async def test_switched_off_it_opens_no_connection(
    tmp_path: Path, database_url: str, registry: KeyRegistry
) -> None:
    settings = settings_for(tmp_path, database_url, ICODRIP_STORE_WAKEUP="0")
    async with StoreWakeup.for_store(settings, registry.recorder, name="off") as wakeup:
        assert not wakeup.listens
        assert wakeup.poll_interval(0.1) == 0.1
        assert not listening_backends(database_url, wakeup)
