"""Listing keys from the key listing (ADR 0021): one read of the view, plus the events it has
not applied yet, so a key changed a moment ago lists as it is now.

The durable view is written by the worker a little behind the store. A listing reads the
view's position and the states it holds, then the store's events after that position (none,
usually: one indexed query) and folds those of the listed keys in. A key the view does not
hold (a view written before the listing existed) and a view far behind (its worker stopped)
are read from the store, key by key, as before the listing: slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import structlog

from application.registry import KeyRegistry
from domain.api_key import ApiKey
from projections.key_listing import fold_keys, key_from
from projections.key_lookup_view import KeyLookupView

log = structlog.get_logger()

#: Events beyond the view's position a listing folds in; more means the view is far behind.
TAIL_LIMIT = 1000


class KeyListingReader:
    """Keys by id, as loading each would give, from the listing and the store's latest events."""

    def __init__(
        self, registry: KeyRegistry, view: KeyLookupView, *, tail_limit: int = TAIL_LIMIT
    ) -> None:
        self.registry = registry
        self.view = view
        self.tail_limit = tail_limit

    def keys(self, key_ids: Sequence[UUID]) -> list[ApiKey]:
        """These keys, in this order, current to the store's last event."""
        ids = list(key_ids)
        if not ids:
            return []
        position, states = self.view.key_states(self.registry.name, ids)
        tail = self.registry.recorder.select_notifications(
            start=position, limit=self.tail_limit, inclusive_of_start=False
        )
        if len(tail) >= self.tail_limit:
            log.warning("key_listing.view_behind", position=position, read_from="store")
            return [self.registry.get_key(key_id) for key_id in ids]
        keys = {key_id: key_from(state) for key_id, state in states.items()}
        for key_id in ids:
            if key_id not in keys:
                keys[key_id] = self.registry.get_key(key_id)
        wanted = set(ids)
        events = (
            self.registry.mapper.to_domain_event(notification)
            for notification in tail
            if notification.originator_id in wanted
        )
        fold_keys(events, keys, self._key_at)
        return [keys.get(key_id) or self.registry.get_key(key_id) for key_id in ids]

    def _key_at(self, key_id: UUID, version: int) -> ApiKey | None:
        """A key whose state is behind a gap, as it was at `version`."""
        key: object = self.registry.repository.get(key_id, version=version)
        return key if isinstance(key, ApiKey) else None
