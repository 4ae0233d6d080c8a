"""Forgetting usage past its retention: buckets of each granularity, and old event ids.

The usage worker runs this beside its ingestion (`bootstrap.workers.run_usage`): at start and
then every `PRUNE_EVERY` seconds, on whichever copy the ingester writes to at the time. Event
ids are forgotten only up to the consumer's ack floor (asked of the ingester each time): an id
in a message not yet acknowledged may still be delivered again (`projections.usage_query`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from projections.usage_query import UsageStore
from projections.usage_retention import UsageRetention

log = structlog.get_logger()

PRUNE_EVERY = 3_600.0


async def prune_usage_until_stopped(
    current: Callable[[], UsageStore],
    acked_through: Callable[[], Awaitable[int | None]],
    retention: UsageRetention,
    stopping: asyncio.Event,
    every: float = PRUNE_EVERY,
) -> None:
    """Prune `current()` now and every `every` seconds until `stopping` is set."""
    while not stopping.is_set():
        try:
            store = current()
            acked = await acked_through()
            if current() is not store:  # switched meanwhile: that ack floor is another copy's
                acked = None
            pruned = await asyncio.to_thread(store.prune, retention, time.time(), acked)
        except Exception as error:  # the store away: the next round tries again
            log.warning("usage.prune_failed", error=type(error).__name__)
        else:
            if pruned.buckets or pruned.event_ids:
                log.info("usage.pruned", buckets=pruned.buckets, event_ids=pruned.event_ids)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=every)
