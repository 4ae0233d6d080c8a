"""Starting while dependencies are not there yet: retries with backoff instead of exiting.

Processes started together (compose, `serve` beside `worker`) find the store, NATS or Redis
not usable for a moment: a database created a little later, a port not listening yet, a
table another process is creating. Such errors are *transient*: the start is tried again
after 0.5 s, 1 s, 2 s, … (at most 10 s apart, ±20 % jitter), each retry logged as
`startup.retrying` with the attempt, the error's type and its message. A non-transient error
(bad settings, a bug) ends the start at once; so does the stop signal. See ADR 0014.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats.errors
import nats.js.errors
import psycopg
import redis.exceptions
import structlog
from eventsourcing import persistence

log = structlog.get_logger()

T = TypeVar("T")

#: Errors that go away by themselves: a store, NATS or Redis not reachable or not ready yet.
TRANSIENT: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted
    TimeoutError,  # also asyncio's and nats-py's timeouts
    # eventsourcing's wrappers of the drivers' errors; IntegrityError is what the second of
    # two processes creating a tracking table at once got (the table is there on a retry).
    persistence.InterfaceError,
    persistence.OperationalError,
    persistence.IntegrityError,
    persistence.InternalError,
    psycopg.OperationalError,  # includes psycopg_pool.PoolTimeout
    psycopg.InterfaceError,
    sqlite3.OperationalError,  # "database is locked"
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.StaleConnectionError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.ServiceUnavailableError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.ETIMEDOUT,
    errno.EAGAIN,
}


def is_transient(error: BaseException) -> bool:
    """Whether `error` (or what caused it) may go away by itself (see `TRANSIENT`)."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 8:
        if isinstance(current, TRANSIENT):
            return True
        if isinstance(current, OSError) and current.errno in _TRANSIENT_ERRNOS:
            return True
        if isinstance(current, OSError) and type(current).__name__ == "gaierror":
            return True  # a service's name not resolvable yet (compose starts it)
        current = current.__cause__  # an error wrapping a transient one (`raise … from`)
        seen += 1
    return False


def describe(error: BaseException) -> str:
    """The error's message on one line, at most 200 characters (for logs)."""
    return " ".join(str(error).split())[:200]


@dataclass
class Backoff:
    """Exponential delays: `initial`, times `factor` per attempt, at most `cap`, ±`jitter`."""

    initial: float = 0.5
    cap: float = 10.0
    factor: float = 2.0
    jitter: float = 0.2
    attempt: int = 0

    def next_delay(self) -> float:
        """Count a failed attempt; the seconds to wait before the next one."""
        base = min(self.cap, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311 - jitter

    def reset(self) -> None:
        self.attempt = 0


class StartupStopped(Exception):
    """The stop signal came while a start was being retried."""


def retrying(component: str, backoff: Backoff, error: Exception) -> float:
    """Log a failed attempt; the delay before the next one. Re-raises a non-transient error."""
    if not is_transient(error):
        log.error(
            "startup.failed",
            component=component,
            attempt=backoff.attempt + 1,
            error=type(error).__name__,
            detail=describe(error),
        )
        raise error
    delay = backoff.next_delay()
    log.warning(
        "startup.retrying",
        component=component,
        attempt=backoff.attempt,
        error=type(error).__name__,
        detail=describe(error),
        retry_in=round(delay, 2),
    )
    return delay


def _recovered(component: str, backoff: Backoff) -> None:
    if backoff.attempt:
        log.info("startup.recovered", component=component, attempts=backoff.attempt + 1)


def retry_start(
    component: str,
    start: Callable[[], T],
    *,
    stop: threading.Event | None = None,
    backoff: Backoff | None = None,
) -> T:
    """`start()`, tried again after a transient error until it succeeds.

    Raises a non-transient error at once, and `StartupStopped` when `stop` is set while
    waiting (without `stop`, a signal's default action ends the wait, and the process).
    """
    backoff = backoff or Backoff()
    while True:
        try:
            result = start()
        except Exception as error:
            delay = retrying(component, backoff, error)
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                log.info("startup.stopped", component=component, attempts=backoff.attempt)
                raise StartupStopped(component) from error
            continue
        _recovered(component, backoff)
        return result


async def retry_start_async(
    component: str,
    start: Callable[[], Awaitable[T]],
    stopping: asyncio.Event,
    *,
    backoff: Backoff | None = None,
    healthy_after: float | None = None,
) -> T:
    """The async `retry_start`: `StartupStopped` when `stopping` is set while waiting.

    With `healthy_after`, an attempt that ran that many seconds before it failed counts as a
    start that worked: the backoff begins again from its first delay.
    """
    backoff = backoff or Backoff()
    while True:
        began = time.monotonic()
        try:
            result = await start()
        except Exception as error:
            if healthy_after is not None and time.monotonic() - began >= healthy_after:
                backoff.reset()
            delay = retrying(component, backoff, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)
            if stopping.is_set():
                log.info("startup.stopped", component=component, attempts=backoff.attempt)
                raise StartupStopped(component) from error
            continue
        _recovered(component, backoff)
        return result
