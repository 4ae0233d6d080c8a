"""`/v1/events`: record tracking events (a public key's one route), one or a batch at a time,
and list what the organization tracked (`events:read`, secret keys)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from icodrip_client._core import Call, Cursor, Listing, compact, path, rfc3339
from icodrip_client._models.fields import obj
from icodrip_client._models.records import ListedTrackedEvent, TrackedEvent
from icodrip_client._resources._base import AsyncResource, SyncResource
from icodrip_client.errors import UnexpectedResponseError
from icodrip_client.pagination import AsyncPager, Page


def _track(
    event: str,
    properties: Mapping[str, Any] | None,
    timestamp: datetime | str | None,
    idempotency_key: str | None,
) -> Call[TrackedEvent]:
    body = compact(
        event=event,
        properties=None if properties is None else dict(properties),
        timestamp=rfc3339(timestamp),
    )
    return Call(
        "POST",
        path("events"),
        lambda raw: TrackedEvent.from_dict(obj(raw)),
        body=body,
        idempotency_key=idempotency_key,
    )


def _batch_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """One event of a batch as sent: a datetime `timestamp` in RFC 3339, the rest as given
    (the API judges it, and names a bad event by its index)."""
    body = dict(event)
    if isinstance(body.get("timestamp"), datetime):
        body["timestamp"] = rfc3339(body["timestamp"])
    if isinstance(body.get("properties"), Mapping):
        body["properties"] = dict(body["properties"])
    return body


def _tracked_list(body: Any) -> list[TrackedEvent]:
    data = obj(body).get("data")
    if not isinstance(data, list):
        raise UnexpectedResponseError("expected a list in data")
    return [TrackedEvent.from_dict(obj(item, "item")) for item in data]


def _track_batch(
    events: Iterable[Mapping[str, Any]], idempotency_key: str | None
) -> Call[list[TrackedEvent]]:
    body = {"batch": [_batch_event(event) for event in events]}
    return Call("POST", path("events"), _tracked_list, body=body, idempotency_key=idempotency_key)


def _listing(limit: int | None) -> Listing[ListedTrackedEvent]:
    return Listing(path("events"), ListedTrackedEvent.from_dict, compact(limit=limit))


class Events(SyncResource):
    """Tracking events (`client.events`)."""

    def track(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime | str | None = None,
        idempotency_key: str | None = None,
    ) -> TrackedEvent:
        """Record one event; `timestamp` (default: now) within the last 7 days."""
        return self._run(_track(event, properties, timestamp, idempotency_key))

    def track_batch(
        self, events: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> list[TrackedEvent]:
        """Record 1-100 events (`{"event", "properties", "timestamp"}` each) in one request,
        all or none; the tracked events in the order sent."""
        return self._run(_track_batch(events, idempotency_key))

    def list(
        self, *, limit: int | None = None, cursor: Cursor | None = None
    ) -> Page[ListedTrackedEvent]:
        """The key's environment's events, oldest first (`limit` 1-100 per page); needs
        `events:read` and a secret key."""
        return self._page(_listing(limit), cursor)


class AsyncEvents(AsyncResource):
    """Tracking events (`client.events`)."""

    async def track(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime | str | None = None,
        idempotency_key: str | None = None,
    ) -> TrackedEvent:
        return await self._run(_track(event, properties, timestamp, idempotency_key))

    async def track_batch(
        self, events: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> list[TrackedEvent]:
        return await self._run(_track_batch(events, idempotency_key))

    def list(
        self, *, limit: int | None = None, cursor: Cursor | None = None
    ) -> AsyncPager[ListedTrackedEvent]:
        return self._pager(_listing(limit), cursor)
