"""Keeps a key-lookup model current from the key store's notification log."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import Tracking

from application.registry import KeyRegistry
from domain.api_key import ApiKey
from projections.key_listing import fold_keys, key_from, states_of
from projections.key_lookup import Changes, KeyLookup
from projections.key_lookup_view import KeyLookupView

Batch = list[tuple[Any, int]]


class KeyLookupUpdater:
    """Folds new stored events into `lookup`, and into the durable `view` when given."""

    def __init__(
        self, registry: KeyRegistry, lookup: KeyLookup, view: KeyLookupView | None
    ) -> None:
        self.registry = registry
        self.lookup = lookup
        self.view = view
        self._reload = False  # the model ran ahead of the view: load it again before going on

    @classmethod
    def from_view(cls, registry: KeyRegistry, view: KeyLookupView) -> KeyLookupUpdater:
        """Start from what the durable view holds (its rows and position)."""
        return cls(registry, view.load(registry.name), view)

    def fetch(self, batch_size: int = 1000) -> Batch:
        """The next stored events after the model's position, with their positions (I/O)."""
        notifications = self.registry.recorder.select_notifications(
            start=self.lookup.position, limit=batch_size, inclusive_of_start=False
        )
        return [(self.registry.mapper.to_domain_event(n), n.id) for n in notifications]

    def apply(self, batch: Batch) -> Changes:
        """Fold a fetched batch into the in-memory model (no I/O)."""
        changes = Changes()
        for event, position in batch:
            self.lookup.apply(event, position, changes)
        return changes

    def catch_up(self, batch_size: int = 1000) -> int:
        """Fetch, apply and persist one batch; returns how many events were read (0 = caught up)."""
        if self._reload and self.view is not None:
            self.lookup = self.view.load(self.registry.name)
            self._reload = False
        batch = self.fetch(batch_size)
        if not batch:
            return 0
        changes = self.apply(batch)
        if self.view is not None:
            try:
                changes.states = self._listing(self.view, batch)
                self.view.write(changes, Tracking(self.registry.name, self.lookup.position))
            except Exception:
                # The model ran ahead of the durable view: start again from the view, on the
                # next call (loading now may fail too, e.g. while PostgreSQL is down, and then a
                # model past unwritten changes would skip them for good).
                self._reload = True
                raise
        return len(batch)

    def _listing(self, view: KeyLookupView, batch: Batch) -> dict[UUID, bytes | None]:
        """The listing's new states of the keys the batch changed (one read of their old ones);
        None for a key it could not keep."""
        earlier = list(
            {
                event.originator_id
                for event, _ in batch
                if isinstance(event, ApiKey.Event) and not isinstance(event, ApiKey.Created)
            }
        )
        stored = view.key_states(self.registry.name, earlier)[1] if earlier else {}
        keys = {key_id: key_from(state) for key_id, state in stored.items()}
        folded = fold_keys((event for event, _ in batch), keys, self._key_at)
        states: dict[UUID, bytes | None] = dict.fromkeys(folded.dropped)
        states.update(states_of(keys, folded.changed))
        return states

    def _key_at(self, key_id: UUID, version: int) -> ApiKey | None:
        """A key the listing lacks (a view older than the listing), as it was at `version`."""
        try:
            key: object = self.registry.repository.get(key_id, version=version)
        except AggregateNotFoundError:
            return None
        return key if isinstance(key, ApiKey) else None

    def catch_up_fully(self, batch_size: int = 1000) -> int:
        """Apply everything stored so far; returns the number of events read."""
        total = 0
        while read := self.catch_up(batch_size):
            total += read
        return total
