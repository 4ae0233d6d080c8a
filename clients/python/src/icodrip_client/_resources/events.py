"""`POST /v1/events`: record a tracking event (a public key's one route)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from icodrip_client._core import Call, compact, path, rfc3339
from icodrip_client._models.fields import obj
from icodrip_client._models.records import TrackedEvent
from icodrip_client._resources._base import AsyncResource, SyncResource


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
        return self._run(_track(event, properties, timestamp, idempotency_key))


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
