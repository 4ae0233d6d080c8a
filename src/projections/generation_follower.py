"""Following the live generation of a projection's durable copy across rebuilds.

A rebuild fills generation n+1 beside the live one, moves the pointer, waits a grace period and
removes the old copy (`projections.rebuild_sequence`). Every reader and writer of a rebuildable read
model (the key-lookup worker, the API's key views and audit reads, the audit-ingest worker) goes
through one `GenerationFollower`: it re-reads the pointer at most once per `check_interval`
(or on demand), opens the copy the pointer names, and closes a copy it left behind once no call
is using it any more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

import structlog

from projections.generations import POINTER_CHECK_SECONDS, Generation, GenerationStore

log = structlog.get_logger()

Copy = TypeVar("Copy")
Result = TypeVar("Result")


class GenerationFollower(Generic[Copy]):
    """The copy of `projection` the pointer calls live, opened on demand, followed on switches."""

    def __init__(
        self,
        pointers: GenerationStore,
        projection: str,
        default_view: str,
        *,
        open_copy: Callable[[str], Copy],
        close_copy: Callable[[Copy], None],
        check_interval: float = POINTER_CHECK_SECONDS,
    ) -> None:
        self.pointers = pointers
        self.projection = projection
        self.default_view = default_view
        self.check_interval = check_interval
        self._open_copy = open_copy
        self._close_copy = close_copy
        self._lock = threading.Lock()
        self._bound: Generation | None = None
        self._copies: dict[str, Copy] = {}
        self._in_use: dict[str, int] = {}
        self._retired: set[str] = set()
        self._checked_at = float("-inf")

    @property
    def generation(self) -> Generation:
        """The generation calls go to (after re-checking the pointer if it is due)."""
        with self.using() as (generation, _):
            return generation

    @contextmanager
    def using(self, *, force: bool = False) -> Iterator[tuple[Generation, Copy]]:
        """The live generation and its copy, held open for the duration of the block.

        `force` re-reads the pointer now; otherwise at most once per `check_interval`. When the
        pointer cannot be read, a call that already has a copy goes on with it.
        """
        with self._lock:
            self._refresh_locked(force)
            assert self._bound is not None
            generation = self._bound
            name = generation.view_name
            self._in_use[name] += 1
            copy = self._copies[name]
        try:
            yield generation, copy
        finally:
            with self._lock:
                self._in_use[name] -= 1
                self._close_retired_locked()

    def read(self, call: Callable[[Copy], Result]) -> Result:
        """`call` on the live copy; retried once on the new copy if the old one went away."""
        with self.using() as (generation, copy):
            try:
                return call(copy)
            except Exception as error:
                failed, first_error = generation.view_name, error
        try:
            with self.using(force=True) as (generation, copy):
                if generation.view_name == failed:
                    raise first_error
                return call(copy)
        except Exception as error:
            if error is first_error:
                raise
            raise error from first_error

    def newer_than(self, current: Copy) -> Copy | None:
        """The live copy if a switch made it another than `current` (re-checked now), else None.

        For a single user that holds on to its copy between calls (the audit-ingest worker):
        the copy it held is closed here, as it has moved on.
        """
        with self._lock:
            self._refresh_locked(force=True)
            assert self._bound is not None
            live = self._copies[self._bound.view_name]
            return None if live is current else live

    def close(self) -> None:
        """Close every copy this follower opened, and the pointer store."""
        with self._lock:
            for copy in self._copies.values():
                self._close_quietly(copy)
            self._copies.clear()
            self._in_use.clear()
            self._retired.clear()
            self._bound = None
        try:
            self.pointers.close()
        except Exception as error:
            log.warning(
                "projection.close_failed", projection=self.projection, error=type(error).__name__
            )

    def _refresh_locked(self, force: bool) -> None:
        now = time.monotonic()
        if not force and self._bound is not None and now - self._checked_at < self.check_interval:
            return
        self._checked_at = now
        try:
            live = self.pointers.live(self.projection, self.default_view)
        except Exception as error:
            if force or self._bound is None:
                raise
            log.warning(
                "projection.pointer_unreadable",
                projection=self.projection,
                error=type(error).__name__,
            )
            return
        if self._bound is None or live.view_name != self._bound.view_name:
            self._bind_locked(live)

    def _bind_locked(self, live: Generation) -> None:
        if live.view_name not in self._copies:
            self._copies[live.view_name] = self._open_copy(live.view_name)
            self._in_use[live.view_name] = 0
        previous, self._bound = self._bound, live
        if previous is not None and previous.view_name != live.view_name:
            log.info(
                "projection.generation_followed",
                projection=self.projection,
                previous=previous.view_name,
                live=live.view_name,
            )
            self._retired.add(previous.view_name)
            self._close_retired_locked()

    def _close_retired_locked(self) -> None:
        for name in list(self._retired):
            if self._in_use.get(name, 0) == 0 and (
                self._bound is None or name != self._bound.view_name
            ):
                self._close_quietly(self._copies.pop(name))
                self._in_use.pop(name, None)
                self._retired.discard(name)

    def _close_quietly(self, copy: Copy) -> None:
        # Closing happens on the way out of a caller's call: a failure to close must not
        # replace that call's result or error.
        try:
            self._close_copy(copy)
        except Exception as error:
            log.warning(
                "projection.close_failed", projection=self.projection, error=type(error).__name__
            )
