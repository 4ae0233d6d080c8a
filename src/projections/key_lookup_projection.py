"""The key lookup as a projection operators can inspect and rebuild without downtime.

`KeyLookupProjection.rebuild` folds the event store into the next generation beside the live
one, switches the pointer, then removes the old copy with `drop_key_lookup_view`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

from psycopg.sql import SQL, Identifier

from adapters.settings import Settings
from application.stores import open_registry
from projections.generations import Generation, open_generation_store
from projections.key_lookup import KeyLookup
from projections.key_lookup_postgres import PostgresKeyLookupView
from projections.key_lookup_updater import KeyLookupUpdater
from projections.key_lookup_view import (
    KeyLookupView,
    close_key_lookup_view,
    open_named_key_lookup_view,
)
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


def drop_key_lookup_view(settings: Settings, name: str) -> None:
    """Remove the durable key-lookup copy `name` (its file, or its three tables)."""
    if settings.is_embedded:
        base = settings.data_dir / f"{name.lower()}.sqlite3"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{base}{suffix}").unlink(missing_ok=True)
        return
    view = cast(PostgresKeyLookupView, open_named_key_lookup_view(settings, name))
    try:
        tracking = SQL("{0}.{1}").format(
            Identifier(view.datastore.schema), Identifier(view.tracking_table_name)
        )
        with view.datastore.transaction(commit=True) as curs:
            for table in (view.keys_table, view.orgs_table, tracking):
                curs.execute(SQL("DROP TABLE IF EXISTS {0}").format(table))
    finally:
        close_key_lookup_view(view)


class KeyLookupProjection:
    """The hashed-key lookup: event store → `KeyLookup*` views (and every API mirror)."""

    name = KEY_LOOKUP
    description = "key hash → key and org records; authenticates every API request"
    worker = "key-lookup"

    def status(self, settings: Settings) -> ProjectionStatus:
        store = open_generation_store(settings)
        registry = open_registry(settings)
        view: KeyLookupView | None = None
        try:
            record = store.record(KEY_LOOKUP, KEY_LOOKUP_VIEW)
            view = open_named_key_lookup_view(settings, record.live.view_name)
            position = view.max_tracking_id(registry.name) or 0
            rows = view.count()
            head = registry.recorder.max_notification_id() or 0
            worker = WorkerStatus.of(self.worker, store.heartbeats(self.worker))
        finally:
            if view is not None:
                close_key_lookup_view(view)
            registry.close()
            store.close()
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
        settings: Settings,
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
        pointers = open_generation_store(settings)
        registry = open_registry(settings)

        def build(target: Generation) -> BuiltCopy:
            view = open_named_key_lookup_view(settings, target.view_name)
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

        try:
            return rebuild_generation(
                pointers,
                KEY_LOOKUP,
                KEY_LOOKUP_VIEW,
                build=build,
                drop=lambda name: drop_key_lookup_view(settings, name),
                grace=grace,
                force=force,
            )
        finally:
            registry.close()
            pointers.close()
