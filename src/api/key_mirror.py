"""The in-memory key-lookup mirror each API process authenticates against.

Loaded from the durable view at start, then kept current from the key store: every key event
on NATS wakes it (within milliseconds of the relay), and a one-second poll covers a missed
wake-up. A lookup hit does no I/O. A miss asks the durable view once and remembers a negative
answer briefly, so random keys cannot hammer storage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any
from uuid import UUID

import structlog

from adapters.memory import release_free_heap
from application.registry import KeyRegistry
from domain.api_key import ApiKey
from projections.key_lookup import KeyLookup, KeyRecord
from projections.key_lookup_compact import CompactKeyLookup
from projections.key_lookup_updater import KeyLookupUpdater
from projections.key_lookup_view import KeyLookupView

log = structlog.get_logger()

NEGATIVE_TTL = 2.0
POLL_INTERVAL = 1.0


class KeyMirror:
    """Key hash → record, current within a second on every process."""

    def __init__(
        self,
        registry: KeyRegistry,
        view: KeyLookupView,
        *,
        nats_client: Any | None = None,
        subject: str = "icodrip.keys.>",
    ) -> None:
        self.registry = registry
        self.view = view
        self.nats_client = nats_client
        self.subject = subject
        self.updater = KeyLookupUpdater(registry, CompactKeyLookup(), view=None)
        self.ready = False
        self._missing: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._subscription: Any = None
        #: Called with the ids of the aggregates each applied batch changed.
        self.listeners: list[Callable[[set[UUID]], None]] = []

    @property
    def lookup(self) -> KeyLookup:
        return self.updater.lookup

    async def start(self) -> None:
        """Load from the durable view, catch up from the store, then follow changes."""
        self.updater.lookup = await asyncio.to_thread(
            self.view.load, self.registry.name, CompactKeyLookup()
        )
        release_free_heap()  # the load's temporary rows, not kept resident (ADR 0011)
        await self.refresh()
        self.ready = True
        if self.nats_client is not None:
            self._subscription = await self.nats_client.subscribe(self.subject, cb=self._on_event)
        self._task = asyncio.create_task(self._follow())
        log.info("key_mirror.ready", keys=len(self.lookup), position=self.lookup.position)

    async def stop(self) -> None:
        if self._subscription is not None:
            with suppress(Exception):
                await self._subscription.unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def get(self, key_hash: str) -> KeyRecord | None:
        """The record for a hash if the mirror holds it (no I/O)."""
        return self.lookup.get(key_hash)

    def known_missing(self, key_hash: str) -> bool:
        """Whether the durable view said a moment ago that it has no such key (no I/O)."""
        return self._missing.get(key_hash, 0.0) > time.monotonic()

    async def find(self, key_hash: str) -> KeyRecord | None:
        """A mirror miss: ask the durable view once; remember a negative answer briefly."""
        now = time.monotonic()
        if self._missing.get(key_hash, 0.0) > now:
            return None
        found = await asyncio.to_thread(self.view.find, key_hash)
        if found is None:
            if len(self._missing) > 100_000:
                self._missing.clear()
            self._missing[key_hash] = now + NEGATIVE_TTL
            return None
        key, org = found
        if key.key_id not in self.lookup:
            self.lookup.add_key(key)
        if org is not None and self.lookup.get_org(org.org_id) is None:
            self.lookup.add_org(org)
        return self.lookup.get(key_hash)

    async def refresh(self) -> None:
        """Apply everything the store holds beyond the mirror's position."""
        async with self._lock:
            while batch := await asyncio.to_thread(self.updater.fetch, 2000):
                self.updater.apply(batch)
                if self.listeners:
                    changed = {event.originator_id for event, _ in batch}
                    for listener in self.listeners:
                        listener(changed)
                if any(isinstance(event, ApiKey.Created) for event, _ in batch):
                    self._missing.clear()

    async def refresh_after_write(self) -> None:
        """`refresh`, for a request whose change is already stored: a failure to read it back
        is logged, not answered (the change happened; the follower applies it when it can)."""
        try:
            await self.refresh()
        except Exception as error:
            log.warning("key_mirror.refresh_after_write_failed", error=type(error).__name__)

    async def _on_event(self, _msg: Any) -> None:
        self._wake.set()

    async def _follow(self) -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception as error:
                log.warning("key_mirror.refresh_failed", error=type(error).__name__)
