"""The key-lookup view of the live generation, which follows a rebuild's switch.

`open_key_lookup_view(settings)` without a name returns `LiveKeyLookupView`: reads re-check the
pointer at most once a second; a write re-checks it every time and refuses to write into a
generation its model was not loaded from, so the worker reloads instead of leaving a gap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, cast
from uuid import UUID

import structlog
from eventsourcing.persistence import Tracking

from adapters.settings import Settings
from projections.generations import (
    POINTER_CHECK_SECONDS,
    Generation,
    GenerationStore,
    open_generation_store,
)
from projections.key_lookup import Changes, KeyLookup, KeyRecord, OrgRecord
from projections.key_lookup_view import (
    KeyLookupView,
    close_key_lookup_view,
    open_named_key_lookup_view,
)

log = structlog.get_logger()

#: The key lookup's row in the pointer table, and its generation 1 view (the name it always had).
KEY_LOOKUP = "key-lookup"
KEY_LOOKUP_VIEW = "KeyLookup"


class GenerationSwitched(Exception):
    """The live generation moved since the model was loaded: reload it, then continue."""


class LiveKeyLookupView:
    """The key-lookup view of the live generation, following a rebuild's switch.

    - `load` re-reads the pointer and loads from the live generation (and remembers which).
    - `write` re-reads the pointer and raises GenerationSwitched, writing nothing, when the
      live generation is no longer the one the model was loaded from: the updater then
      reloads (from the new generation) and carries on from there, so no event is skipped.
    - `find`, `count`, `max_tracking_id` use the live generation, re-checked at most once a
      second; a failure on a generation that just went away is retried on the new one.
    A generation left behind is closed once no call uses it any more.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: GenerationStore | None = None,
        check_interval: float = POINTER_CHECK_SECONDS,
        opener: Callable[[Settings, str], KeyLookupView] = open_named_key_lookup_view,
    ) -> None:
        self.settings = settings
        self.store = store or open_generation_store(settings)
        self.check_interval = check_interval
        self._opener = opener
        self._lock = threading.Lock()
        self._bound: Generation | None = None
        self._views: dict[str, KeyLookupView] = {}
        self._in_use: dict[str, int] = {}
        self._retired: set[str] = set()
        self._checked_at = float("-inf")
        self._loaded_from: str | None = None
        self._error_recorded = False

    @property
    def generation(self) -> Generation:
        """The generation reads go to (after re-checking the pointer if it is due)."""
        with self._using(force=False) as (generation, _):
            return generation

    # -- binding ----------------------------------------------------------------------

    def _live(self) -> Generation:
        return self.store.live(KEY_LOOKUP, KEY_LOOKUP_VIEW)

    def _bind_locked(self, live: Generation) -> None:
        if live.view_name not in self._views:
            self._views[live.view_name] = self._opener(self.settings, live.view_name)
            self._in_use[live.view_name] = 0
        previous = self._bound
        self._bound = live
        if previous is not None and previous.view_name != live.view_name:
            log.info(
                "key_lookup.generation_followed",
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
                close_key_lookup_view(self._views.pop(name))
                self._in_use.pop(name, None)
                self._retired.discard(name)

    @contextmanager
    def _using(self, *, force: bool) -> Iterator[tuple[Generation, KeyLookupView]]:
        with self._lock:
            now = time.monotonic()
            if force or self._bound is None or now - self._checked_at >= self.check_interval:
                self._checked_at = now
                try:
                    live = self._live()
                except Exception as error:
                    if force or self._bound is None:
                        raise
                    # A read can go on with the generation it has until the pointer answers.
                    log.warning("key_lookup.pointer_unreadable", error=type(error).__name__)
                else:
                    if self._bound is None or live.view_name != self._bound.view_name:
                        self._bind_locked(live)
            assert self._bound is not None
            generation = self._bound
            name = generation.view_name
            self._in_use[name] += 1
            view = self._views[name]
        try:
            yield generation, view
        finally:
            with self._lock:
                self._in_use[name] -= 1
                self._close_retired_locked()

    def _read(self, call: Callable[[KeyLookupView], Any]) -> Any:
        with self._using(force=False) as (generation, view):
            try:
                return call(view)
            except Exception as error:
                failed, first_error = generation.view_name, error
        # The generation may have just been switched away from and removed: look again.
        with self._using(force=True) as (generation, view):
            if generation.view_name == failed:
                raise first_error
            return call(view)

    # -- the KeyLookupView protocol ----------------------------------------------------

    def load(self, application_name: str, into: KeyLookup | None = None) -> KeyLookup:
        with self._using(force=True) as (generation, view):
            lookup = view.load(application_name, into)
            with self._lock:
                self._loaded_from = generation.view_name
            return lookup

    def write(self, changes: Changes, tracking: Tracking) -> None:
        with self._using(force=True) as (generation, view):
            with self._lock:
                loaded_from = self._loaded_from or generation.view_name
                self._loaded_from = loaded_from
            if generation.view_name != loaded_from:
                raise GenerationSwitched(
                    f"the live key-lookup generation is now {generation.view_name}, "
                    f"the model was loaded from {loaded_from}"
                )
            try:
                view.write(changes, tracking)
            except Exception as error:
                self._note_error(
                    f"{type(error).__name__} writing position {tracking.notification_id}"
                )
                raise
        if self._error_recorded:
            with suppress(Exception):
                self.store.clear_error(KEY_LOOKUP)
            self._error_recorded = False

    def _note_error(self, message: str) -> None:
        try:
            self.store.record_error(KEY_LOOKUP, KEY_LOOKUP_VIEW, message)
            self._error_recorded = True
        except Exception as error:
            log.warning("key_lookup.error_not_recorded", error=type(error).__name__)

    def find(self, key_hash: str) -> tuple[KeyRecord, OrgRecord | None] | None:
        return cast(
            "tuple[KeyRecord, OrgRecord | None] | None", self._read(lambda v: v.find(key_hash))
        )

    def max_tracking_id(self, application_name: str) -> int | None:
        return cast("int | None", self._read(lambda v: v.max_tracking_id(application_name)))

    def count(self) -> int:
        return cast(int, self._read(lambda v: v.count()))

    def expiring(self, application_name: str) -> tuple[int, list[tuple[UUID, float]]]:
        return cast(
            "tuple[int, list[tuple[UUID, float]]]",
            self._read(lambda v: v.expiring(application_name)),
        )

    def close(self) -> None:
        with self._lock:
            for view in self._views.values():
                close_key_lookup_view(view)
            self._views.clear()
            self._in_use.clear()
            self._retired.clear()
            self._bound = None
        self.store.close()


def open_key_lookup_view(settings: Settings, name: str | None = None) -> KeyLookupView:
    """The durable view `name`, or the live generation when no name is given.

    The live one is `KeyLookup` until a rebuild switches to `KeyLookup_g2`, …, and it follows
    later switches.
    """
    if name is None:
        return LiveKeyLookupView(settings)
    return open_named_key_lookup_view(settings, name)
