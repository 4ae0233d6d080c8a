"""Runs the named workers in one process until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

import structlog

from adapters import nats as nats_adapter
from adapters.registry import open_registry
from adapters.settings import Settings
from projections.key_lookup_updater import KeyLookupUpdater
from projections.live_key_lookup import open_key_lookup_view
from workers.audit_ingest import run_audit
from workers.expiry import run_expiry
from workers.relay import Relay

log = structlog.get_logger()


async def run_relay(settings: Settings, stopping: asyncio.Event) -> None:
    """The outbox relay: event store → JetStream key-event stream."""
    if not settings.nats_url:
        raise RuntimeError("ICODRIP_NATS_URL is not set (icodrip dev starts its own NATS)")
    registry = open_registry(settings)
    client = await nats_adapter.connect(settings.nats_url, name="icodrip-relay")
    try:
        js = client.jetstream()
        await nats_adapter.ensure_keys_stream(
            js, settings.keys_stream, settings.keys_subject, settings.stream_replicas
        )
        relay = Relay(
            registry, js, stream=settings.keys_stream, subject_prefix=settings.keys_subject
        )
        task = asyncio.create_task(relay.run())
        await stopping.wait()
        relay.stop()
        await task
    finally:
        await client.drain()
        registry.close()


async def run_key_lookup(settings: Settings, stopping: asyncio.Event) -> None:
    """The durable key-lookup view: event store → view rows + tracking, in one transaction."""
    registry = open_registry(settings)
    try:
        updater = await asyncio.to_thread(
            KeyLookupUpdater.from_view, registry, open_key_lookup_view(settings)
        )
        log.info("key_lookup.started", position=updater.lookup.position)
        while not stopping.is_set():
            try:
                read = await asyncio.to_thread(updater.catch_up)
            except Exception as error:
                log.warning("key_lookup.catch_up_failed", error=type(error).__name__)
                read = 0
            if not read:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=0.1)
    finally:
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
    await asyncio.gather(*(WORKERS[name](settings, stopping) for name in selected))
