"""`/v1/audit/events` (the org's replayable lifecycle feed) and `/v1/api-keys/{id}/history`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from api.objects.api_keys import LifecycleEvent, LifecycleEventList
from api.services import Services
from application.history import MAX_FEED_LIMIT, History
from application.key_management import key_ref
from domain.access import Command
from projections.key_lookup import Principal


class AuditEventsController(Controller):
    path = "/v1/audit/events"
    tags = ["audit"]
    security = [{"BearerAuth": []}]

    @get("/", opt={"command": Command.READ_AUDIT})
    async def list_events(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        after: Annotated[
            int,
            QueryParameter(
                ge=0,
                le=2**63 - 1,  # positions are 64-bit: larger ones are a 422, not a 500
                description="Return events after this position (0 = from the beginning).",
            ),
        ] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_FEED_LIMIT)] = 100,
    ) -> LifecycleEventList:
        """The organization's key lifecycle events after a position, oldest first.

        A replayable feed: the same request always returns the same events in the same
        order (positions are the store's; they increase but may skip numbers). Continue with
        `after=next_cursor` while `next_cursor` is not null; once it is, poll later with
        `after` set to the last event's position.
        """
        page = await asyncio.to_thread(
            History(services.registry, request.user).org_events,
            request.user.org_id,
            after=after,
            limit=limit,
        )
        events = msgspec.convert(page.events, list[LifecycleEvent])
        return LifecycleEventList(data=events, next_cursor=page.next_position)


class ApiKeyHistoryController(Controller):
    path = "/v1/api-keys/{key_id:str}/history"
    tags = ["api keys"]
    security = [{"BearerAuth": []}]

    @get("/", opt={"command": Command.READ_KEYS})
    async def key_history(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        key_id: FromPath[str],
    ) -> LifecycleEventList:
        """Every lifecycle event of one of the organization's keys: who, when, what changed."""
        history = History(services.registry, request.user)
        events = await asyncio.to_thread(history.key_history, key_ref(key_id))
        return LifecycleEventList(
            data=msgspec.convert(events, list[LifecycleEvent]), next_cursor=None
        )
