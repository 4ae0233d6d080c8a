"""The expiry worker: retires keys whose expiry time or roll grace period has passed.

It finds due keys with `ExpiryIndex`, a small in-memory projection folded from the key store's
notification log (key id → expiry, for keys that have one and are not revoked). At start it
is seeded from the durable key-lookup view (its unrevoked keys with an expiry, and its
position), so only the events after the view's position are read; then it follows by
polling. For each due key it calls `KeyRegistry.expire_key`, which writes `ApiKey.Expired`
with the system as actor (on the wire, still `api_key.revoked`: docs/events.md). Idempotent
and safe with several workers: the aggregate does not expire a stopped key, and optimistic
concurrency makes the loser of a race re-read the key and do nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from uuid import UUID

import structlog

from application.registry import KeyRegistry
from domain.api_key import ApiKey
from domain.ids import format_key_id
from projections.key_lookup_view import KeyLookupView

log = structlog.get_logger()

#: How often the worker looks for due keys (and new events), in seconds.
POLL_INTERVAL = 0.5
BATCH_SIZE = 1000
#: A key that failed to expire is tried again after this many seconds.
RETRY_AFTER = 5.0


class ExpiryIndex:
    """Keys that have an expiry and are not revoked, from the store's events (no I/O)."""

    def __init__(self) -> None:
        self.expiries: dict[UUID, float] = {}
        self.position = 0

    def apply(self, event: Any, position: int) -> None:
        if position <= self.position:
            return
        self.position = position
        key_id = event.originator_id
        if isinstance(event, ApiKey.Created):
            if event.expires_at is not None:
                self.expiries[key_id] = event.expires_at.timestamp()
        elif isinstance(event, ApiKey.Rolled):
            self.expiries[key_id] = event.expires_at.timestamp()
        elif isinstance(event, ApiKey.Revoked | ApiKey.Expired):
            self.expiries.pop(key_id, None)

    def due(self, now: float) -> list[UUID]:
        """Keys whose time is up, soonest first."""
        return sorted(
            (k for k, at in self.expiries.items() if at <= now), key=self.expiries.__getitem__
        )


class ExpiryWorker:
    """Follows the store and expires due keys; `run_once` is one pass (used by tests too)."""

    def __init__(self, registry: KeyRegistry, view: KeyLookupView | None = None) -> None:
        self.registry = registry
        self.index = ExpiryIndex()
        self._retry_at: dict[UUID, float] = {}
        self._view = view

    def seed(self) -> None:
        """Start from the key-lookup view's rows and position instead of the whole log."""
        if self._view is None or self.index.position:
            return
        try:
            position, keys = self._view.expiring(self.registry.name)
        except Exception as error:  # no view yet, or unreachable: the log is the fallback
            log.warning("expiry.seed_failed", error=type(error).__name__)
            return
        self.index.expiries.update(keys)
        self.index.position = position
        log.info("expiry.seeded", keys=len(keys), position=position)

    def catch_up(self) -> int:
        """Fold new stored events into the index (I/O); the number read."""
        self.seed()
        self._view = None  # once: later the index follows the log itself
        total = 0
        while True:
            notifications = self.registry.recorder.select_notifications(
                start=self.index.position, limit=BATCH_SIZE, inclusive_of_start=False
            )
            for notification in notifications:
                topic = notification.topic
                if topic.startswith("domain.api_key:"):
                    event = self.registry.mapper.to_domain_event(notification)
                    self.index.apply(event, notification.id)
                else:
                    self.index.position = max(self.index.position, notification.id)
            total += len(notifications)
            if len(notifications) < BATCH_SIZE:
                return total

    def run_once(self) -> int:
        """Catch up, then expire every due key; the number of keys this pass retired."""
        self.catch_up()
        now = time.time()
        expired = 0
        for key_id in self.index.due(now):
            if self._retry_at.get(key_id, 0.0) > now:
                continue
            try:
                done = self.registry.expire_key(key_id)
            except Exception as error:
                self._retry_at[key_id] = now + RETRY_AFTER
                log.warning(
                    "expiry.failed", key_id=format_key_id(key_id), error=type(error).__name__
                )
                continue
            self._retry_at.pop(key_id, None)
            self.index.expiries.pop(key_id, None)  # revoked now, by us or by another worker
            if done:
                expired += 1
                log.info("expiry.revoked", key_id=format_key_id(key_id))
        return expired


async def expire_until_stopped(worker: ExpiryWorker, stopping: asyncio.Event) -> None:
    """Retire due keys every `POLL_INTERVAL` until `stopping` (`icodrip worker expiry`)."""
    log.info("expiry.started")
    while not stopping.is_set():
        try:
            await asyncio.to_thread(worker.run_once)
        except Exception as error:
            log.warning("expiry.pass_failed", error=type(error).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=POLL_INTERVAL)
