"""The key lookup as a projection operators can inspect and rebuild without downtime.

`KeyLookupProjection.rebuild` folds the event store into the next generation beside the live
one, switches the pointer, then removes the old copy with `drop_key_lookup_view`.
"""

from __future__ import annotations

import time
from contextlib import suppress
from pathlib import Path
from typing import cast

from adapters.registry import open_registry
from adapters.settings import Settings
from projections.generations import open_generation_store
from projections.key_lookup import KeyLookup
from projections.key_lookup_updater import KeyLookupUpdater
from projections.key_lookup_view import (
    KeyLookupView,
    PostgresKeyLookupView,
    close_key_lookup_view,
    open_named_key_lookup_view,
)
from projections.live_key_lookup import KEY_LOOKUP, KEY_LOOKUP_VIEW
from projections.rebuilds import (
    DEFAULT_GRACE_SECONDS,
    ProgressCallback,
    ProjectionStatus,
    RebuildProgress,
    RebuildReport,
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
        from psycopg.sql import SQL, Identifier

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
        finally:
            if view is not None:
                close_key_lookup_view(view)
            registry.close()
            store.close()
        return ProjectionStatus.of(
            self.name, "event store", record, position=position, head=head, rows=rows
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
        store = open_generation_store(settings)
        registry = open_registry(settings)
        new_view: KeyLookupView | None = None
        try:
            previous = store.live(KEY_LOOKUP, KEY_LOOKUP_VIEW)
            target = store.claim(KEY_LOOKUP, KEY_LOOKUP_VIEW, force=force)
            try:
                drop_key_lookup_view(settings, target.view_name)  # leftovers of a dead rebuild
                new_view = open_named_key_lookup_view(settings, target.view_name)
                updater = KeyLookupUpdater(registry, KeyLookup(), new_view)
                started = time.monotonic()
                head = registry.recorder.max_notification_id() or 0
                events = 0
                while read := updater.catch_up(batch_size):
                    events += read
                    position = updater.lookup.position
                    head = max(head, position)
                    if progress is not None:
                        progress(
                            RebuildProgress(events, position, 0, head, time.monotonic() - started)
                        )
                live = store.switch(KEY_LOOKUP, expected=previous, new=target)
            except BaseException as error:
                store.abandon(KEY_LOOKUP, KEY_LOOKUP_VIEW, target.number, error)
                if new_view is not None:
                    close_key_lookup_view(new_view)
                    new_view = None
                with suppress(Exception):
                    drop_key_lookup_view(settings, target.view_name)
                raise
            seconds = time.monotonic() - started
            rows = new_view.count()
            close_key_lookup_view(new_view)
            new_view = None
            # Readers re-check the pointer at least once a second: give them time to move.
            time.sleep(max(0.0, grace))
            drop_key_lookup_view(settings, previous.view_name)
            with suppress(Exception):
                store.clear_error(KEY_LOOKUP)
            return RebuildReport(
                name=self.name,
                previous=previous,
                live=live,
                events=events,
                position=updater.lookup.position,
                rows=rows,
                seconds=seconds,
                removed=previous.view_name,
            )
        finally:
            if new_view is not None:
                close_key_lookup_view(new_view)
            registry.close()
            store.close()
