"""The key-lookup view of the live generation, which follows a rebuild's switch.

`open_key_lookup_view(settings)` without a name returns `LiveKeyLookupView`: reads re-check the
pointer at most once a second; a write re-checks it every time and refuses to write into a
generation its model was not loaded from, so the worker reloads instead of leaving a gap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from uuid import UUID

import structlog
from eventsourcing.persistence import Tracking

from adapters.settings import Settings
from projections.generation_follower import GenerationFollower
from projections.generation_store import open_generation_store
from projections.generations import POINTER_CHECK_SECONDS, Generation, GenerationStore
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
        self._follower: GenerationFollower[KeyLookupView] = GenerationFollower(
            self.store,
            KEY_LOOKUP,
            KEY_LOOKUP_VIEW,
            open_copy=lambda name: opener(settings, name),
            close_copy=close_key_lookup_view,
            check_interval=check_interval,
        )
        self._lock = threading.Lock()
        self._loaded_from: str | None = None
        self._error_recorded = False

    @property
    def generation(self) -> Generation:
        """The generation reads go to (after re-checking the pointer if it is due)."""
        return self._follower.generation

    # -- the KeyLookupView protocol ----------------------------------------------------

    def load(self, application_name: str, into: KeyLookup | None = None) -> KeyLookup:
        with self._follower.using(force=True) as (generation, view):
            lookup = view.load(application_name, into)
            with self._lock:
                self._loaded_from = generation.view_name
            return lookup

    def write(self, changes: Changes, tracking: Tracking) -> None:
        with self._follower.using(force=True) as (generation, view):
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
        return self._follower.read(lambda v: v.find(key_hash))

    def max_tracking_id(self, application_name: str) -> int | None:
        return self._follower.read(lambda v: v.max_tracking_id(application_name))

    def count(self) -> int:
        return self._follower.read(lambda v: v.count())

    def expiring(self, application_name: str) -> tuple[int, list[tuple[UUID, float]]]:
        return self._follower.read(lambda v: v.expiring(application_name))

    def key_states(
        self, application_name: str, key_ids: list[UUID]
    ) -> tuple[int, dict[UUID, bytes]]:
        return self._follower.read(lambda v: v.key_states(application_name, key_ids))

    def close(self) -> None:
        self._follower.close()


def open_key_lookup_view(settings: Settings, name: str | None = None) -> KeyLookupView:
    """The durable view `name`, or the live generation when no name is given.

    The live one is `KeyLookup` until a rebuild switches to `KeyLookup_g2`, …, and it follows
    later switches.
    """
    if name is None:
        return LiveKeyLookupView(settings)
    return open_named_key_lookup_view(settings, name)
