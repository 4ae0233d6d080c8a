"""The key lookup as a projection operators can inspect and rebuild without downtime.

`KeyLookupProjection.rebuild` folds the event store into the next generation beside the live
one, switches the pointer, then removes the old copy. It opens nothing itself: the stores
come as openers from the composition root (`bootstrap.projections`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import partial

from application.registry import KeyRegistry
from projections.generations import Generation, GenerationStore
from projections.key_lookup import KeyLookup
from projections.key_lookup_updater import KeyLookupUpdater
from projections.key_lookup_view import KeyLookupView, close_key_lookup_view
from projections.live_key_lookup import KEY_LOOKUP, KEY_LOOKUP_VIEW
from projections.rebuild_sequence import BuiltCopy, rebuild_generation
from projections.rebuilds import (
    DEFAULT_GRACE_SECONDS,
    ProgressCallback,
    ProjectionStatus,
    RebuildProgress,
    RebuildReport,
    WorkerStatus,
)


class KeyLookupProjection:
    """The hashed-key lookup: event store → `KeyLookup*` views (and every API mirror)."""

    name = KEY_LOOKUP
    description = "key hash → key and org records, key listing; authenticates every request"
    worker = "key-lookup"

    def __init__(
        self,
        *,
        pointers: Callable[[], GenerationStore],
        registry: Callable[[], KeyRegistry],
        view: Callable[[str], KeyLookupView],
        drop: Callable[[str], None],
    ) -> None:
        self._pointers = pointers
        self._registry = registry
        self._view = view
        self._drop = drop

    def status(self) -> ProjectionStatus:
        with contextlib.ExitStack() as opened:
            store = self._pointers()
            opened.callback(store.close)
            registry = self._registry()
            opened.callback(registry.close)
            record = store.record(KEY_LOOKUP, KEY_LOOKUP_VIEW)
            view = self._view(record.live.view_name)
            opened.callback(close_key_lookup_view, view)
            position = view.max_tracking_id(registry.name) or 0
            rows = view.count()
            head = registry.recorder.max_notification_id() or 0
            worker = WorkerStatus.of(self.worker, store.heartbeats(self.worker))
        return ProjectionStatus.of(
            self.name,
            "event store",
            record,
            position=position,
            head=head,
            rows=rows,
            worker=worker,
        )

    def rebuild(
        self,
        *,
        progress: ProgressCallback | None = None,
        grace: float = DEFAULT_GRACE_SECONDS,
        batch_size: int = 1000,
        force: bool = False,
    ) -> RebuildReport:
        """Build the next generation from zero beside the live one, switch, remove the old.

        The live view is never written here; API processes keep serving from memory and
        follow the pointer, and the key-lookup worker reloads from the new generation.
        """
        with contextlib.ExitStack() as opened:
            pointers = self._pointers()
            opened.callback(pointers.close)
            registry = self._registry()
            opened.callback(registry.close)
            return rebuild_generation(
                pointers,
                KEY_LOOKUP,
                KEY_LOOKUP_VIEW,
                build=partial(self._build, registry, progress, batch_size),
                drop=self._drop,
                grace=grace,
                force=force,
            )

    def _build(
        self,
        registry: KeyRegistry,
        progress: ProgressCallback | None,
        batch_size: int,
        target: Generation,
    ) -> BuiltCopy:
        """Fold the whole event store into the copy `target` names."""
        view = self._view(target.view_name)
        try:
            updater = KeyLookupUpdater(registry, KeyLookup(), view)
            started = time.monotonic()
            head = registry.recorder.max_notification_id() or 0
            events = 0
            while read := updater.catch_up(batch_size):
                events += read
                position = updater.lookup.position
                head = max(head, position)
                if progress is not None:
                    elapsed = time.monotonic() - started
                    progress(RebuildProgress(events, position, 0, head, elapsed))
            return BuiltCopy(events, updater.lookup.position, view.count())
        finally:
            close_key_lookup_view(view)
