"""Tracking events sent by client SDKs with public keys (`POST /v1/events`), per org and env.

Stored with `adapters.scoped_rows` (SQLite on the embedded default, else PostgreSQL).
Properties are kept as JSON text, already validated and size-limited by the route. A batch is
stored in one statement: all of its events or none.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from adapters import scoped_rows
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


@dataclass(frozen=True, slots=True)
class EventToStore:
    """An event to store: its name, its properties as JSON text, when it happened (None: now)."""

    name: str
    properties: str
    occurred_at: float | None = None


def encode_cursor(seq: int) -> str:
    return scoped_rows.encode_cursor("e", seq)


def decode_cursor(cursor: str) -> int:
    """The position a cursor of `GET /v1/events` stands for; ValueError when it is not one."""
    return scoped_rows.decode_cursor("e", cursor)


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

    def add_many(
        self, org_id: str, env: str, key_id: str, events: Sequence[EventToStore]
    ) -> list[TrackedEvent]:
        """Store `events` (one batch, sent with one key) at once; them as stored, in order."""
        now = time.time()
        rows = [
            (
                f"evt_{uuid.uuid4().hex}",
                org_id,
                env,
                key_id,
                event.name,
                event.properties,
                now if event.occurred_at is None else event.occurred_at,
                now,
            )
            for event in events
        ]
        return [TrackedEvent(*row) for row in self._rows.insert_many(rows)]

    def page(self, org_id: str, env: str, after: int, limit: int) -> list[TrackedEvent]:
        return [TrackedEvent(*row) for row in self._rows.page(org_id, env, after, limit)]

    def close(self) -> None:
        self._rows.close()


def open_tracked_event_store(settings: Settings) -> TrackedEventStore:
    return TrackedEventStore(settings)
