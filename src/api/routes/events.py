"""`/v1/events`: the tracking call client SDKs make with a public key (`events:write`), and the
organization's read of what it tracked (`events:read`, secret keys).

`POST` takes one event, `{"event": "signup", "properties": {...}, "timestamp": "…Z"}` (a body
of at most `EVENT_MAX_BODY_BYTES`), or up to `MAX_BATCH` of them as `{"batch": [...]}` (at most
`BATCH_MAX_BODY_BYTES`, each event at most `EVENT_MAX_BODY_BYTES` of JSON), as the browser SDK
(`api/sdk/icodrip.js`) sends them. Each event is validated alike (422 `validation_error`,
naming a batch's event by its index: one bad event refuses the batch, nothing is stored); a
batch is stored in one statement. Browser requests are answered with CORS headers by
`api.cors` for the key's allowed origins. `GET` lists the key's environment's events, oldest
first, by cursor.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, cast

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.openapi.spec import Schema
from litestar.params import Body, FromQuery, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED
from msgspec import UNSET, UnsetType

from adapters.tracked_events import EventToStore, decode_cursor, encode_cursor
from adapters.tracked_events import TrackedEvent as StoredEvent
from api.errors import ApiError, handle_api_error, handle_http
from api.objects.events import (
    Env,
    ListedTrackedEvent,
    ListedTrackedEventList,
    TrackedEvent,
    TrackedEventList,
)
from api.services import Services
from domain.access import Command
from projections.key_lookup import Principal

#: One event's body (or, in a batch, its JSON): as before batches existed.
EVENT_MAX_BODY_BYTES = 16 * 1024
#: A batch's body: what a browser may send with `keepalive` when the page goes away.
BATCH_MAX_BODY_BYTES = 64 * 1024
MAX_BATCH = 100
MAX_PROPERTIES = 100
#: How far from now an event's own timestamp may be.
MAX_PAST = timedelta(days=7)
MAX_FUTURE = timedelta(minutes=5)

EventName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f]+$",
        description="The event's name: 1-200 characters, no control characters.",
    ),
]
PropertyName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Properties = Annotated[
    dict[PropertyName, Any],
    msgspec.Meta(max_length=MAX_PROPERTIES, description="At most 100 entries; default {}."),
]
Timestamp = Annotated[
    datetime,
    msgspec.Meta(
        description="RFC 3339 with an offset, within the last 7 days and at most 5 minutes "
        "ahead; default: when it is received."
    ),
]


class NewTrackedEvent(msgspec.Struct, forbid_unknown_fields=True):
    """One event of a batch."""

    event: EventName
    properties: Properties = {}
    timestamp: Timestamp | None = None


class NewTrackedEvents(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One event (`event`, with its `properties` and `timestamp`), or 1-100 events as
    `batch` (each with its own `properties` and `timestamp`): never both."""

    event: EventName | UnsetType = UNSET
    properties: Properties | UnsetType = UNSET
    timestamp: Timestamp | UnsetType | None = UNSET
    batch: (
        Annotated[
            list[NewTrackedEvent],
            msgspec.Meta(
                min_length=1,
                max_length=MAX_BATCH,
                description="1-100 events, stored together or not at all (body ≤ 64 KiB).",
            ),
        ]
        | UnsetType
    ) = UNSET

    def events(self) -> list[tuple[str, NewTrackedEvent]]:
        """The events sent, each with the name a refusal calls it by (`batch[3]`, or none)."""
        if isinstance(self.batch, UnsetType):
            if isinstance(self.event, UnsetType):
                raise ApiError(422, "validation_error", "event: required (or send batch)")
            one = NewTrackedEvent(
                self.event,
                {} if isinstance(self.properties, UnsetType) else self.properties,
                None if isinstance(self.timestamp, UnsetType) else self.timestamp,
            )
            return [("", one)]
        if not all(isinstance(v, UnsetType) for v in (self.event, self.properties, self.timestamp)):
            raise ApiError(
                422,
                "validation_error",
                "batch: send either one event (event, properties, timestamp) or a batch, "
                "whose events carry their own properties and timestamp",
            )
        return [(f"batch[{i}]", event) for i, event in enumerate(self.batch)]


#: For the OpenAPI document: exactly one of `event` and `batch` (msgspec decodes no union of
#: two object types without a tag, so the two shapes are one struct, told apart here).
_ONE_SHAPE = {"one_of": [Schema(required=["event"]), Schema(required=["batch"])]}

_encoder = msgspec.json.Encoder()


def _malformed_body(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """A body that is not JSON is a `validation_error` here (400), like any other bad event."""
    if exc.status_code == 400 and not isinstance(exc, ApiError):
        return handle_api_error(request, ApiError(400, "validation_error", str(exc.detail)))
    return handle_http(request, exc)


def _occurred_at(where: str, timestamp: datetime | None, now: datetime) -> float | None:
    """The event's own time in Unix seconds (None: now); 422 unless zoned and near now."""
    if timestamp is None:
        return None
    field = f"{where}.timestamp" if where else "timestamp"
    if timestamp.tzinfo is None:
        raise ApiError(422, "validation_error", f"{field}: needs a time zone, e.g. ...T12:00:00Z")
    if not now - MAX_PAST <= timestamp <= now + MAX_FUTURE:
        raise ApiError(
            422,
            "validation_error",
            f"{field}: must be within the last 7 days and not in the future",
        )
    return timestamp.timestamp()


def _to_store(sent: list[tuple[str, NewTrackedEvent]]) -> list[EventToStore]:
    """What to store for the events sent; 422 for the first one that may not be."""
    now = datetime.now(UTC)
    stored = []
    for where, event in sent:
        if where and len(_encoder.encode(event)) > EVENT_MAX_BODY_BYTES:
            raise ApiError(
                422, "validation_error", f"{where}: an event may be at most 16 KiB of JSON"
            )
        occurred = _occurred_at(where, event.timestamp, now)
        stored.append(
            EventToStore(event.event, _encoder.encode(event.properties).decode(), occurred)
        )
    return stored


def _instant(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def tracked_event(stored: StoredEvent) -> TrackedEvent:
    return TrackedEvent(
        id=stored.id,
        event=stored.name,
        env=cast(Env, stored.env),  # stored from a key's environment
        timestamp=_instant(stored.occurred_at),
        received_at=_instant(stored.received_at),
    )


def listed_event(stored: StoredEvent) -> ListedTrackedEvent:
    return ListedTrackedEvent(
        **msgspec.structs.asdict(tracked_event(stored)),
        properties=msgspec.json.decode(stored.properties),
        key_id=stored.key_id,
    )


class EventsController(Controller):
    path = "/v1/events"
    tags = ["events"]
    security = [{"BearerAuth": []}]
    exception_handlers = {HTTPException: _malformed_body}

    @post(
        "/",
        opt={"command": Command.SEND_EVENTS},
        status_code=HTTP_202_ACCEPTED,
        request_max_body_size=BATCH_MAX_BODY_BYTES,
        description=(
            "One event (answered with it), or 1-100 as `batch` (answered with the list). "
            "A single event's body is at most 16 KiB, a batch's 64 KiB (413)."
        ),
    )
    async def track(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        data: Annotated[NewTrackedEvents, Body(schema_extra=_ONE_SHAPE)],
    ) -> TrackedEvent | TrackedEventList:
        """Record tracking events for the key's organization and environment."""
        store = services.tracked_events
        if store is None:
            raise ApiError(503, "events_unavailable", "event tracking is not available")
        sent = data.events()
        single = isinstance(data.batch, UnsetType)
        if single and len(await request.body()) > EVENT_MAX_BODY_BYTES:
            raise ApiError(
                413,
                "payload_too_large",
                "one event may be at most 16 KiB; send larger loads as a batch (64 KiB)",
            )
        principal = request.user
        stored = await asyncio.to_thread(
            store.add_many,
            principal.org_id_text,
            principal.env.value,
            principal.key_id_text,
            _to_store(sent),
        )
        if single:
            return tracked_event(stored[0])
        return TrackedEventList(data=[tracked_event(event) for event in stored])

    @get(
        "/",
        opt={"command": Command.READ_EVENTS},
        cache_control=CacheControlHeader(no_store=True),
    )
    async def list_events(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        cursor: FromQuery[str | None] = None,
    ) -> ListedTrackedEventList:
        """The organization's tracked events in this key's environment, oldest first."""
        store = services.tracked_events
        if store is None:
            raise ApiError(503, "events_unavailable", "event tracking is not available")
        try:
            after = decode_cursor(cursor) if cursor else 0
        except ValueError:
            raise ApiError(422, "validation_error", "cursor: not a cursor from this API") from None
        principal = request.user
        rows = await asyncio.to_thread(
            store.page, principal.org_id_text, principal.env.value, after, limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return ListedTrackedEventList(
            data=[listed_event(event) for event in rows],
            next_cursor=encode_cursor(rows[-1].seq) if more else None,
        )
