"""The key-lookup worker: the event store → the durable key-lookup view (its rows, the key
listing and the tracking position, in one transaction per batch)."""

from __future__ import annotations

import asyncio

import structlog

from adapters.store_wakeup import StoreWakeup
from projections.key_lookup_updater import KeyLookupUpdater

log = structlog.get_logger()

#: Idle wait when nothing wakes the worker (SQLite, `ICODRIP_STORE_WAKEUP=0`); on PostgreSQL
#: it waits for the store's NOTIFY, with a 1 s fallback (ADR 0018).
KEY_LOOKUP_POLL = 0.1


async def follow_key_lookup(
    updater: KeyLookupUpdater, wakeup: StoreWakeup, stopping: asyncio.Event
) -> None:
    """Apply every new stored event to the view until `stopping`."""
    idle = wakeup.poll_interval(KEY_LOOKUP_POLL)
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
