"""The process's shared reader of the live request-audit model, and the keys' last use.

For the API: `request_audit_store_for` opens, on first use, a store that follows the live copy
across rebuilds (`LiveRequestAuditStore`); `close_request_audit_stores` closes them when the
process stops; `last_used` and `last_used_at` serve the key views.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import cast

from adapters.settings import Settings
from projections.request_audit import LastUsed
from projections.request_audit_projection import LiveRequestAuditStore
from projections.request_audit_query import K, RequestAuditStore

_shared: dict[tuple[str | None, str], RequestAuditStore] = {}
_shared_lock = threading.Lock()


def request_audit_store_for(settings: Settings) -> RequestAuditStore:
    """The process's shared audit store for these settings (opened on first use).

    For the API: its handlers and the key views (`last_used`) call this; close the stores
    with `close_request_audit_stores()` when the process stops.
    """
    key = (settings.database_url, str(settings.data_dir))
    with _shared_lock:
        store = _shared.get(key)
        if store is None:
            store = _shared[key] = cast(RequestAuditStore, LiveRequestAuditStore(settings))
        return store


def close_request_audit_stores() -> None:
    """Close the stores `request_audit_store_for` opened."""
    with _shared_lock:
        stores = list(_shared.values())
        _shared.clear()
    for store in stores:
        with contextlib.suppress(Exception):
            store.close()


def last_used(settings: Settings, key_ids: Iterable[K]) -> dict[K, LastUsed]:
    """When and from where each of these keys was last used (absent = never, or not yet seen)."""
    return request_audit_store_for(settings).last_used(key_ids)


def last_used_at(used: LastUsed | None) -> datetime | None:
    """A last-use time as an aware UTC datetime (for `api_key_view(last_used_at=…)`)."""
    return None if used is None else datetime.fromtimestamp(used.at, UTC)
