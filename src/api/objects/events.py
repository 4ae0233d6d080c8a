"""The tracked event object, as `POST /v1/events` answers it and `GET /v1/events` lists it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

Env = Literal["live", "test"]


class TrackedEvent(msgspec.Struct, kw_only=True):
    """A tracking event as stored: `timestamp` is when it happened (the one sent, else when it
    was received), `received_at` when the API stored it."""

    id: str
    object: Literal["event"] = "event"
    event: str
    env: Env
    timestamp: datetime
    received_at: datetime


class TrackedEventList(msgspec.Struct, kw_only=True):
    """The events of a batch, stored in the order sent; never more to fetch."""

    object: Literal["list"] = "list"
    data: list[TrackedEvent]
    next_cursor: None = None


class ListedTrackedEvent(TrackedEvent, kw_only=True):
    """A tracked event as `GET /v1/events` lists it: with its properties and the key that
    sent it (`key_…`)."""

    properties: dict[str, Any]
    key_id: str


class ListedTrackedEventList(msgspec.Struct, kw_only=True):
    """Tracked events oldest first; continue with `cursor=next_cursor` while it is not null."""

    object: Literal["list"] = "list"
    data: list[ListedTrackedEvent]
    next_cursor: str | None
