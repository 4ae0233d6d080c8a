"""A worker process's heartbeats: each of its workers' state, written every few seconds.

One row per worker and process (`host:pid`) in the projections' pointer store
(`projections.generations`, table `icodrip_workers`), written every `HEARTBEAT_SECONDS` and at
once when a worker's state changes (`running`, `retrying`, `stopped` on the way out).
`icodrip projections status` reads them: a worker whose latest heartbeat is older than
`STALE_AFTER_SECONDS` (a process killed, a machine gone) is not running. Writing is best
effort: a store that cannot be written is logged once, and tried again at the next beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from projections.generations import HEARTBEAT_SECONDS, GenerationStore

log = structlog.get_logger()


def instance_name() -> str:
    """This process among the workers: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeats:
    """The states of one process's workers, and the task that writes them."""

    def __init__(
        self,
        open_store: Callable[[], GenerationStore],
        names: list[str],
        *,
        interval: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._open_store = open_store
        self.interval = interval
        self.instance = instance_name()
        self.started_at = datetime.now(UTC)
        self.states = dict.fromkeys(names, "starting")
        self._changed = asyncio.Event()
        self._done = asyncio.Event()
        self._store: GenerationStore | None = None
        self._failing = False

    def set(self, name: str, state: str) -> None:
        """Worker `name` is now in `state` (written at once)."""
        if self.states.get(name) != state:
            self.states[name] = state
            self._changed.set()

    def finish(self) -> None:
        """Every worker has stopped: write that and end `run`."""
        for name in self.states:
            self.states[name] = "stopped"
        self._done.set()
        self._changed.set()

    def _write(self, states: dict[str, str], *, forget: bool = False) -> None:
        if self._store is None:
            self._store = self._open_store()
        if forget:
            self._store.forget_heartbeats()
        self._store.beat(self.instance, states, self.started_at)

    async def _beat(self, *, forget: bool = False) -> None:
        try:
            await asyncio.to_thread(self._write, dict(self.states), forget=forget)
        except Exception as error:
            if not self._failing:
                log.warning("workers.heartbeat_failed", error=type(error).__name__)
                self._failing = True
            return
        if self._failing:
            log.info("workers.heartbeat_resumed")
            self._failing = False

    async def run(self) -> None:
        """Write the heartbeats until `finish`, then the last one (`stopped`)."""
        forget = True
        try:
            while True:
                done = self._done.is_set()  # before the write: `finish` meanwhile = one more
                self._changed.clear()
                await self._beat(forget=forget)
                forget = False
                if done:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=self.interval)
        finally:
            store, self._store = self._store, None
            if store is not None:
                with contextlib.suppress(Exception):
                    store.close()
