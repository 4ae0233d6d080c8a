"""Start-up retries: transient errors are tried again with backoff (logged), others end it."""

from __future__ import annotations

import asyncio
import threading

import nats.errors
import psycopg_pool
import pytest
from eventsourcing import persistence
from structlog.testing import capture_logs

from adapters.settings import SettingsError
from adapters.startup import (
    Backoff,
    StartupStopped,
    is_transient,
    retry_start,
    retry_start_async,
)


def quick() -> Backoff:
    return Backoff(initial=0.01, cap=0.05)


def wrapped(cause: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("opening the view failed") from cause
    except RuntimeError as error:
        return error


@pytest.mark.parametrize(
    "error",
    [
        persistence.IntegrityError("Failed to record tracking for __migration__ 1"),
        persistence.OperationalError("database is locked"),
        persistence.InterfaceError("connection closed"),
        psycopg_pool.PoolTimeout("couldn't get a connection after 5.00 sec"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        nats.errors.NoServersError(),
        wrapped(persistence.OperationalError("the store went away")),
    ],
    ids=type,
)
def test_store_and_connection_errors_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        SettingsError("ICODRIP_KEY_PEPPER must be at least 16 characters"),
        ValueError("bad URL"),
        RuntimeError("ICODRIP_NATS_URL is not set"),
        persistence.ProgrammingError("syntax error"),
        PermissionError(13, "Permission denied"),
    ],
    ids=type,
)
def test_settings_errors_and_bugs_are_not(error: BaseException) -> None:
    assert not is_transient(error)


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    backoff = Backoff(initial=0.5, cap=4.0, jitter=0.2)
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, base in zip(delays, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert backoff.attempt == 6
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() <= 0.6


def test_a_transient_failure_is_retried_and_each_attempt_logged() -> None:
    calls: list[int] = []

    def start() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise persistence.IntegrityError("Failed to record tracking for __migration__ 1")
        return "started"

    with capture_logs() as logs:
        assert retry_start("api", start, backoff=quick()) == "started"
    assert len(calls) == 3
    retries = [e for e in logs if e["event"] == "startup.retrying"]
    assert [e["attempt"] for e in retries] == [1, 2]
    assert {e["error"] for e in retries} == {"IntegrityError"}
    assert all(e["component"] == "api" and e["log_level"] == "warning" for e in retries)
    assert "__migration__" in retries[0]["detail"]
    assert [e["attempts"] for e in logs if e["event"] == "startup.recovered"] == [3]


def test_a_non_transient_error_ends_the_start_at_once() -> None:
    calls: list[int] = []

    def start() -> None:
        calls.append(1)
        raise SettingsError("ICODRIP_DATABASE_URL must be a postgresql:// URL")

    with capture_logs() as logs, pytest.raises(SettingsError):
        retry_start("api", start, backoff=quick())
    assert len(calls) == 1
    assert [e["event"] for e in logs] == ["startup.failed"]


def test_the_stop_signal_ends_the_retries() -> None:
    stop = threading.Event()

    def start() -> None:
        stop.set()  # e.g. SIGTERM while the store is still away
        raise persistence.OperationalError("no store yet")

    with pytest.raises(StartupStopped):
        retry_start("worker", start, stop=stop, backoff=Backoff(initial=30))


async def test_async_retries_stop_promptly_when_stopping_is_set() -> None:
    stopping = asyncio.Event()
    attempts: list[int] = []

    async def start() -> None:
        attempts.append(1)
        raise persistence.OperationalError("no store yet")

    asyncio.get_running_loop().call_later(0.2, stopping.set)
    started = asyncio.get_running_loop().time()
    with pytest.raises(StartupStopped):
        await retry_start_async("worker relay", start, stopping, backoff=Backoff(initial=30))
    assert asyncio.get_running_loop().time() - started < 2
    assert len(attempts) == 1
