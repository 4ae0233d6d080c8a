"""Assembling the workers from settings: each opens its stores and connections here, then
runs its loop from `workers/`, which never opens a store itself.

`icodrip worker [NAME…]` and `icodrip dev` run them through `run_workers`, which supervises
them (`workers.runner`: retries after a transient error, heartbeats for `projections status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from functools import partial

from adapters import nats as nats_adapter
from adapters.settings import Settings
from adapters.startup import StartupStopped, retry_start_async
from adapters.store_wakeup import StoreWakeup
from application.stores import open_registry
from bootstrap.lifetime_sweep import run_lifetimes
from bootstrap.webhook_worker import run_webhooks
from projections.generation_follower import Copy, GenerationFollower
from projections.generation_store import open_generation_store
from projections.key_lookup_updater import KeyLookupUpdater
from projections.live_key_lookup import LiveKeyLookupView
from projections.request_audit_live import live_audit_follower
from projections.usage_live import live_usage_follower
from projections.usage_retention import UsageRetention
from workers.audit_ingest import AuditIngester, AuditIngestSettings, Model
from workers.expiry import ExpiryWorker, expire_until_stopped
from workers.key_lookup import follow_key_lookup
from workers.relay import Relay
from workers.runner import WorkerEntry, supervise_workers
from workers.usage_pruning import prune_usage_until_stopped

#: Idle wait of the relay when nothing wakes it (SQLite, `ICODRIP_STORE_WAKEUP=0`); on
#: PostgreSQL it waits for the store's NOTIFY, with a 1 s fallback (ADR 0018).
RELAY_POLL = 0.05


def _nats_url(settings: Settings) -> str:
    if not settings.nats_url:
        raise RuntimeError("ICODRIP_NATS_URL is not set (icodrip dev starts its own NATS)")
    return settings.nats_url


async def run_relay(settings: Settings, stopping: asyncio.Event) -> None:
    """The outbox relay: event store → JetStream key-event stream."""
    nats_url = _nats_url(settings)
    async with contextlib.AsyncExitStack() as opened:
        # In a thread: the store's open can wait seconds while it is not there (the other
        # workers, and a stop signal, are not held up meanwhile).
        registry = await asyncio.to_thread(open_registry, settings)
        opened.callback(registry.close)
        wakeup = StoreWakeup.for_store(settings, registry.recorder, name="relay")
        opened.push_async_callback(wakeup.aclose)
        await wakeup.start()
        client = await nats_adapter.connect(nats_url, name="icodrip-relay")
        opened.push_async_callback(client.drain)
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


async def run_key_lookup(settings: Settings, stopping: asyncio.Event) -> None:
    """The durable key-lookup view: event store → view rows + listing + tracking."""
    async with contextlib.AsyncExitStack() as opened:
        registry = await asyncio.to_thread(open_registry, settings)
        opened.callback(registry.close)
        wakeup = StoreWakeup.for_store(settings, registry.recorder, name="key-lookup")
        opened.push_async_callback(wakeup.aclose)
        await wakeup.start()
        view = await asyncio.to_thread(LiveKeyLookupView, settings)
        opened.callback(view.close)
        updater = await asyncio.to_thread(KeyLookupUpdater.from_view, registry, view)
        await follow_key_lookup(updater, wakeup, stopping)


async def run_expiry(settings: Settings, stopping: asyncio.Event) -> None:
    """The expiry worker: retires keys whose expiry or roll grace has passed."""
    async with contextlib.AsyncExitStack() as opened:
        registry = await asyncio.to_thread(open_registry, settings)
        opened.callback(registry.close)
        view = await asyncio.to_thread(LiveKeyLookupView, settings)
        opened.callback(view.close)
        await expire_until_stopped(ExpiryWorker(registry, view), stopping)


async def run_audit(settings: Settings, stopping: asyncio.Event) -> None:
    """The audit-ingest worker: request events on JetStream → the request-audit model."""
    async with _ingester(settings, stopping, live_audit_follower, "audit") as ingester:
        if ingester is not None:
            await ingester.run(stopping)


async def run_usage(settings: Settings, stopping: asyncio.Event) -> None:
    """The usage-ingest worker: request events on JetStream → per-key usage (its own durable
    consumer), and the buckets past their retention pruned every hour (`workers.usage_pruning`)."""
    retention = UsageRetention.from_env(os.environ)
    async with _ingester(settings, stopping, live_usage_follower, "usage") as ingester:
        if ingester is None:
            return
        pruning = asyncio.create_task(
            prune_usage_until_stopped(
                lambda: ingester.store, ingester.acknowledged_through, retention, stopping
            )
        )
        try:
            await ingester.run(stopping)
        finally:
            pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruning


@contextlib.asynccontextmanager
async def _ingester(
    settings: Settings,
    stopping: asyncio.Event,
    live_follower: Callable[[Settings], GenerationFollower[Model]],
    label: str,
) -> AsyncIterator[AuditIngester[Model] | None]:
    """An ingester of the request-event stream into a model's live copy, on the consumer
    `label` names; None when stopped while its store was awaited."""
    nats_url = _nats_url(settings)
    async with contextlib.AsyncExitStack() as opened:
        # In a thread, like every open: reading the pointer connects to the store.
        follower = await asyncio.to_thread(live_follower, settings)
        opened.push_async_callback(asyncio.to_thread, follower.close)
        try:
            store = await retry_start_async(
                f"{label} store", partial(asyncio.to_thread, _live_copy, follower), stopping
            )
        except StartupStopped:
            yield None
            return
        config = AuditIngestSettings.from_env(label=label)
        yield AuditIngester(store, nats_url, config, follow=follower.newer_than)


def _live_copy(follower: GenerationFollower[Copy]) -> Copy:
    with follower.using(force=True) as (_, copy):
        return copy


#: Every worker, by the name `icodrip worker NAME` takes.
WORKERS: dict[str, WorkerEntry] = {
    "relay": run_relay,
    "key-lookup": run_key_lookup,
    "audit": run_audit,
    "expiry": run_expiry,
    "lifetimes": run_lifetimes,
    "usage": run_usage,
    "webhooks": run_webhooks,
}


async def run_workers(
    settings: Settings,
    names: list[str],
    *,
    stopping: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Run `names` (all workers when empty) until `stopping` is set or a termination signal."""
    await supervise_workers(
        WORKERS,
        settings,
        names,
        heartbeat_store=partial(open_generation_store, settings),
        stopping=stopping,
        handle_signals=handle_signals,
    )
