"""Runs the named workers in one process until SIGINT/SIGTERM.

Each worker is supervised: a transient error (the store, NATS or Redis not usable yet or
any more; see `adapters.startup`) makes it start again after a backoff, logged as
`startup.retrying`, instead of ending the process; a non-transient one stops every worker and
is raised. The process writes each worker's state as a heartbeat (`workers.heartbeats`), which
`icodrip projections status` reads (ADR 0014).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping

import structlog

from adapters.settings import Settings
from adapters.startup import StartupStopped, retry_start_async
from projections.generations import GenerationStore
from workers.heartbeats import Heartbeats

log = structlog.get_logger()

#: A worker's entry point: run until the event is set (assembled by `bootstrap.workers`).
WorkerEntry = Callable[[Settings, asyncio.Event], Awaitable[None]]


async def supervise_workers(
    workers: Mapping[str, WorkerEntry],
    settings: Settings,
    names: list[str],
    *,
    heartbeat_store: Callable[[], GenerationStore],
    stopping: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Run `names` of `workers` (all when empty) until `stopping` or a termination signal."""
    stopping = stopping or asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
    selected = names or list(workers)
    log.info("workers.starting", workers=selected)
    heartbeats = Heartbeats(heartbeat_store, selected)
    beating = asyncio.create_task(heartbeats.run())

    async def supervised(name: str) -> None:
        try:
            await _supervise(name, workers[name], settings, stopping, heartbeats)
        except BaseException:
            stopping.set()  # a worker gave up: the others stop too, and the process exits
            raise

    try:
        results = await asyncio.gather(
            *(supervised(name) for name in selected), return_exceptions=True
        )
    finally:
        heartbeats.finish()
        await beating
    for result in results:
        if isinstance(result, BaseException):
            raise result


#: A worker that ran this long before it failed had started: its backoff begins again.
HEALTHY_AFTER = 60.0


async def _supervise(
    name: str,
    worker: WorkerEntry,
    settings: Settings,
    stopping: asyncio.Event,
    heartbeats: Heartbeats,
) -> None:
    """Run worker `name` until `stopping`, starting it again after a transient error."""

    async def attempt() -> None:
        heartbeats.set(name, "running")
        try:
            await worker(settings, stopping)
        except Exception:
            heartbeats.set(name, "retrying")
            raise

    try:
        await retry_start_async(f"worker {name}", attempt, stopping, healthy_after=HEALTHY_AFTER)
    except StartupStopped:
        pass
    finally:
        heartbeats.set(name, "stopped")
