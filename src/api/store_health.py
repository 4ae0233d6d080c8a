"""Fail fast while the store is down: once a request meets an unreachable PostgreSQL, the API
answers `/v1/…` handlers 503 `store_unavailable` at once (authentication, permissions and
limits still come from memory first) until a background probe reaches the store again.

Without it every request would wait out the library's own retries (`eventsourcing` retries each
query ten times, each waiting up to the pool timeout): about half a minute per request, holding
one of the few worker threads all along.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog

from api.errors import store_unavailable

log = structlog.get_logger()

#: Seconds between probes while the store is down.
PROBE_INTERVAL = 0.5
GATED_PREFIX = "/v1/"


class StoreHealth:
    """Down from the first store error until `probe()` (run in a thread) succeeds again."""

    def __init__(self, probe: Callable[[], object]) -> None:
        self._probe = probe
        self.down_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def mark_down(self) -> None:
        """Called by the store-error handler; starts probing (from the event loop)."""
        if self.down_since is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the event loop: nothing can probe, so do not gate
            return
        self.down_since = time.monotonic()
        log.warning("api.store_down")
        self._task = loop.create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self._probe)
            except Exception:  # still down
                await asyncio.sleep(PROBE_INTERVAL)
                continue
            down_for = time.monotonic() - (self.down_since or time.monotonic())
            self.down_since = None
            self._task = None
            log.info("api.store_up", down_seconds=round(down_for, 1))
            return

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def gate(self, request: Any) -> None:
        """Litestar `before_request`: 503 at once for API handlers while the store is down."""
        if self.down_since is not None and request.scope["path"].startswith(GATED_PREFIX):
            raise store_unavailable()
