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
from collections.abc import Awaitable, Callable

import structlog

from adapters import nats as nats_adapter
from adapters.settings import Settings
from adapters.startup import StartupStopped, retry_start_async
from adapters.store_wakeup import StoreWakeup
from application.stores import open_registry
from projections.key_lookup_updater import KeyLookupUpdater
from projections.key_lookup_view import KeyLookupView
from projections.live_key_lookup import LiveKeyLookupView, open_key_lookup_view
from workers.audit_ingest import run_audit
from workers.expiry import run_expiry
from workers.heartbeats import Heartbeats
from workers.relay import Relay

log = structlog.get_logger()

#: Idle waits when nothing wakes the followers (SQLite, `ICODRIP_STORE_WAKEUP=0`); on
#: PostgreSQL they wait for the store's NOTIFY, with a 1 s fallback (ADR 0018).
RELAY_POLL = 0.05
KEY_LOOKUP_POLL = 0.1


async def run_relay(settings: Settings, stopping: asyncio.Event) -> None:
    """The outbox relay: event store → JetStream key-event stream."""
    if not settings.nats_url:
        raise RuntimeError("ICODRIP_NATS_URL is not set (icodrip dev starts its own NATS)")
    # In a thread: the store's open can wait seconds while it is not there (the other
    # workers, and a stop signal, are not held up meanwhile).
    registry = await asyncio.to_thread(open_registry, settings)
    wakeup = StoreWakeup.for_store(settings, registry.recorder, name="relay")
    try:
        await wakeup.start()
        client = await nats_adapter.connect(settings.nats_url, name="icodrip-relay")
        try:
            js = client.jetstream()
            await nats_adapter.ensure_keys_stream(
                js, settings.keys_stream, settings.keys_subject, settings.stream_replicas
            )
            relay = Relay(
                registry,
                js,
                stream=settings.keys_stream,
                subject_prefix=settings.keys_subject,
                poll_interval=wakeup.poll_interval(RELAY_POLL),
                wakeup=wakeup,
            )
            task = asyncio.create_task(relay.run())
            await stopping.wait()
            relay.stop()
            await task
        finally:
            await client.drain()
    finally:
        await wakeup.aclose()
        registry.close()


async def run_key_lookup(settings: Settings, stopping: asyncio.Event) -> None:
    """The durable key-lookup view: event store → view rows + tracking, in one transaction."""
    registry = await asyncio.to_thread(open_registry, settings)
    wakeup = StoreWakeup.for_store(settings, registry.recorder, name="key-lookup")
    view: KeyLookupView | None = None
    try:
        await wakeup.start()
        idle = wakeup.poll_interval(KEY_LOOKUP_POLL)
        view = await asyncio.to_thread(open_key_lookup_view, settings)
        updater = await asyncio.to_thread(KeyLookupUpdater.from_view, registry, view)
        log.info("key_lookup.started", position=updater.lookup.position)
        while not stopping.is_set():
            wait = idle
            try:
                read = await asyncio.to_thread(updater.catch_up)
            except Exception as error:
                log.warning("key_lookup.catch_up_failed", error=type(error).__name__)
                read = 0
                wait = KEY_LOOKUP_POLL  # a failed batch (a generation switch) is retried soon
            if not read:
                await wakeup.wait(wait, until=stopping)
    finally:
        await wakeup.aclose()
        if isinstance(view, LiveKeyLookupView):
            view.close()  # started again after a failure: nothing left open
        registry.close()


WORKERS: dict[str, Callable[[Settings, asyncio.Event], Awaitable[None]]] = {
    "relay": run_relay,
    "key-lookup": run_key_lookup,
    "audit": run_audit,
    "expiry": run_expiry,
}


async def run_workers(
    settings: Settings,
    names: list[str],
    *,
    stopping: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Run `names` (all workers when empty) until `stopping` is set or a termination signal."""
    stopping = stopping or asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
    selected = names or list(WORKERS)
    log.info("workers.starting", workers=selected)
    heartbeats = Heartbeats(settings, selected)
    beating = asyncio.create_task(heartbeats.run())

    async def supervised(name: str) -> None:
        try:
            await _supervise(name, settings, stopping, heartbeats)
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
    name: str, settings: Settings, stopping: asyncio.Event, heartbeats: Heartbeats
) -> None:
    """Run worker `name` until `stopping`, starting it again after a transient error."""
    worker = WORKERS[name]

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
