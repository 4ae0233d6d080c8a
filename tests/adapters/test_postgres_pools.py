"""Checked PostgreSQL pools (`adapters.postgres_pools`): a connection the server closed is never
handed out, the pool's other dead ones go with it, and a live one costs no round trip.

The server closing a connection is `pg_terminate_backend` here (what a restart does to each
session: a `57P01` goodbye, then the socket closes); `tests/faults/test_postgres_restart.py`
restarts a real cluster under load.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from adapters import postgres_pools
from adapters.event_store import event_store_env, store_pool
from adapters.postgres_pools import CHECKED_POSTGRES_FACTORY, checked_pool
from adapters.settings import Settings
from application.stores import open_registry
from support.databases import fresh_database


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database("pools") as url:
        yield url


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the empty-query checks (round trips) the pools make."""
    calls: list[int] = []
    real = ConnectionPool.check_connection

    def counting(conn: Any) -> None:
        calls.append(1)
        real(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counting))
    return calls


def backend_pids(pool: ConnectionPool[Any], n: int) -> list[int]:
    """Check out `n` connections at once (so the pool holds n), return their server pids."""
    conns = [pool.getconn() for _ in range(n)]
    try:
        return [conn.info.backend_pid for conn in conns]
    finally:
        for conn in conns:
            pool.putconn(conn)


def terminate(url: str, pids: list[int]) -> None:
    """What a restart does to these sessions; returns once they are gone."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
        deadline = time.monotonic() + 10
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "the sessions did not end"
            time.sleep(0.02)


def test_a_live_connection_costs_no_round_trip(database: str, round_trips: list[int]) -> None:
    with checked_pool(database, min_size=1, max_size=2, open=True, timeout=5.0) as pool:
        for _ in range(50):
            with pool.connection() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    assert round_trips == []


def test_connections_the_server_closed_are_never_handed_out(
    database: str, round_trips: list[int]
) -> None:
    pool = store_pool(database)
    try:
        old = backend_pids(pool, 4)
        terminate(database, old)
        started = time.monotonic()
        for _ in range(6):  # more than the dead ones: none of them fails a query
            with pool.connection() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
                assert conn.info.backend_pid not in old
        # One dead connection found, the pool drained: no second check, no backoff sleep.
        assert round_trips == [1]
        assert time.monotonic() - started < 1.0
    finally:
        pool.close()


def test_a_notification_waiting_on_a_live_connection_does_not_discard_it(
    database: str, round_trips: list[int]
) -> None:
    with checked_pool(
        database, min_size=1, max_size=1, open=True, kwargs={"autocommit": True}
    ) as pool:
        with pool.connection() as conn:
            conn.execute("LISTEN pools_test")
            pid = conn.info.backend_pid
        with psycopg.connect(database, autocommit=True) as other:
            other.execute("NOTIFY pools_test")
        time.sleep(0.1)  # the notification is on the idle connection's socket now
        with pool.connection() as conn:
            assert conn.info.backend_pid == pid
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert round_trips == [1]  # readable, so tried once: alive, kept


def test_the_event_store_pools_are_checked_too(tmp_path: Path, database: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database, key_pepper=b"p" * 32)
    assert event_store_env(settings)["PERSISTENCE_MODULE"] == CHECKED_POSTGRES_FACTORY
    registry = open_registry(settings)
    try:
        datastore = registry.recorder.datastore  # type: ignore[attr-defined]
        with datastore.get_connection() as conn:  # no library retry around this one
            old = [conn.info.backend_pid]
        terminate(database, old)
        with datastore.get_connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == {"?column?": 1}
            assert conn.info.backend_pid not in old
    finally:
        registry.close()


def test_while_the_server_is_down_a_dead_connection_fails_its_request_at_once(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a wait for the pool's timeout: the API's store gate closes on the first 503."""
    monkeypatch.setattr(postgres_pools, "server_answers", lambda pool: False)
    pool = store_pool(database)
    try:
        old = backend_pids(pool, 2)
        terminate(database, old)
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError), pool.connection() as conn:
            conn.execute("SELECT 1")
        assert time.monotonic() - started < 1.0
    finally:
        pool.close()
