"""Tracking events sent by client SDKs with public keys (`POST /v1/events`), per org and env.

Stored with `adapters.scoped_rows` (SQLite on the embedded default, else PostgreSQL).
Properties are kept as JSON text, already validated and size-limited by the route.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from adapters.scoped_rows import ScopedRows
from adapters.settings import Settings


@dataclass(frozen=True, slots=True)
class TrackedEvent:
    id: str
    org_id: str
    env: str
    key_id: str
    name: str
    properties: str  # JSON object
    occurred_at: float
    received_at: float
    seq: int


class TrackedEventStore:
    """Tracking events per organization and environment (`adapters.scoped_rows`)."""

    def __init__(self, settings: Settings) -> None:
        self._rows = ScopedRows(
            settings,
            "tracked_events",
            [
                ("id", "text UNIQUE NOT NULL"),
                ("org_id", "text NOT NULL"),
                ("env", "text NOT NULL"),
                ("key_id", "text NOT NULL"),
                ("name", "text NOT NULL"),
                ("properties", "text NOT NULL"),
                ("occurred_at", "double precision NOT NULL"),
                ("received_at", "double precision NOT NULL"),
            ],
        )

    def add(
        self,
        org_id: str,
        env: str,
        key_id: str,
        name: str,
        properties: str,
        occurred_at: float | None,
    ) -> TrackedEvent:
        now = time.time()
        event_id = f"evt_{uuid.uuid4().hex}"
        values = (event_id, org_id, env, key_id, name, properties, occurred_at or now, now)
        return TrackedEvent(*self._rows.insert(values))

    def page(self, org_id: str, env: str, after: int, limit: int) -> list[TrackedEvent]:
        return [TrackedEvent(*row) for row in self._rows.page(org_id, env, after, limit)]

    def close(self) -> None:
        self._rows.close()


def open_tracked_event_store(settings: Settings) -> TrackedEventStore:
    return TrackedEventStore(settings)
