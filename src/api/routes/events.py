"""`POST /v1/events`: the tracking call client SDKs make with a public key (`events:write`).

Body: `{"event": "signup", "properties": {...}, "timestamp": "2026-11-26T12:00:00Z"}`.
Validated (422 `validation_error`), limited to `EVENTS_MAX_BODY_BYTES` (413
`payload_too_large`), stored per organization and environment. Browser requests are answered
with CORS headers by `api.cors` for the key's allowed origins.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from api.errors import ApiError, handle_api_error, handle_http
from api.services import Services
from application.views import iso
from domain.access import Command
from projections.key_lookup import Principal

EVENTS_MAX_BODY_BYTES = 16 * 1024
MAX_PROPERTIES = 100
#: How far from now an event's own timestamp may be.
MAX_PAST = timedelta(days=7)
MAX_FUTURE = timedelta(minutes=5)

EventName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
PropertyName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class TrackedEventIn(msgspec.Struct, forbid_unknown_fields=True):
    event: EventName
    properties: Annotated[dict[PropertyName, Any], msgspec.Meta(max_length=MAX_PROPERTIES)] = {}
    timestamp: datetime | None = None


_encoder = msgspec.json.Encoder()


def _malformed_body(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """A body that is not JSON is a `validation_error` here (400), like any other bad event."""
    if exc.status_code == 400 and not isinstance(exc, ApiError):
        return handle_api_error(request, ApiError(400, "validation_error", str(exc.detail)))
    return handle_http(request, exc)


class EventsController(Controller):
    path = "/v1/events"
    tags = ["events"]
    security = [{"BearerAuth": []}]
    exception_handlers = {HTTPException: _malformed_body}

    @post(
        "/",
        opt={"command": Command.SEND_EVENTS},
        status_code=HTTP_202_ACCEPTED,
        request_max_body_size=EVENTS_MAX_BODY_BYTES,
    )
    async def track(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        data: JSONBody[TrackedEventIn],
    ) -> dict[str, Any]:
        """Record one tracking event for the key's organization and environment."""
        store = services.tracked_events
        if store is None:
            raise ApiError(503, "events_unavailable", "event tracking is not available")
        occurred: float | None = None
        if data.timestamp is not None:
            if data.timestamp.tzinfo is None:
                raise ApiError(
                    422, "validation_error", "timestamp: needs a time zone, e.g. ...T12:00:00Z"
                )
            now = datetime.now(UTC)
            if not now - MAX_PAST <= data.timestamp <= now + MAX_FUTURE:
                raise ApiError(
                    422,
                    "validation_error",
                    "timestamp: must be within the last 7 days and not in the future",
                )
            occurred = data.timestamp.timestamp()
        principal = request.user
        stored = await asyncio.to_thread(
            store.add,
            principal.org_id_text,
            principal.env.value,
            principal.key_id_text,
            data.event,
            _encoder.encode(data.properties).decode(),
            occurred,
        )
        return {
            "id": stored.id,
            "object": "event",
            "event": stored.name,
            "env": stored.env,
            "timestamp": iso(datetime.fromtimestamp(stored.occurred_at, UTC)),
            "received_at": iso(datetime.fromtimestamp(stored.received_at, UTC)),
        }
