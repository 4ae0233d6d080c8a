"""`/v1/api-keys`: manage the organization's keys with a key (the dashboard has its own pages)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, patch, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response.base import ASGIResponse
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.errors import ApiError
from api.key_dependencies import provide_key_management
from api.objects.api_keys import ApiKey, ApiKeyList
from api.services import Services
from application.history import History, parse_moment
from application.key_management import KeyManagement, KeyOrder, ManagedKey, key_ref, page_after
from application.registry import utc_now
from application.views import api_key_view
from domain.access import Command
from domain.errors import ValidationError
from domain.ids import parse_key_id
from projections.key_lookup import Principal


class NewApiKey(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    env: Literal["live", "test"] | None = None
    type: Literal["secret", "public"] = "secret"
    permissions: list[str] | None = None
    # With its offset: a naive time would be read in no particular zone (and cannot be compared).
    expires_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    allowed_origins: list[str] = []
    allowed_ips: list[str] = []


class ApiKeyChange(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    allowed_ips: list[str] | None = None


class Roll(msgspec.Struct, forbid_unknown_fields=True):
    expire_in_seconds: Annotated[int, msgspec.Meta(ge=0, le=30 * 86400)] = 86400
    # The successor's expiry: by default the old key's (a policy may ask for a sooner one).
    expires_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    # Revoke the old key sooner, once it has not been used for this long (in its grace).
    revoke_when_idle_minutes: Annotated[int, msgspec.Meta(ge=1, le=30 * 1440)] | None = None


class Revocation(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


#: The cursor format's tag: a token of another list (or none of ours) is refused.
_CURSOR_TAG = "ak1"
MAX_PAGE = 100
#: The answers that show a new key's secret are kept out of every cache.
SHOWS_A_SECRET = CacheControlHeader(no_store=True)


def _view(record: ManagedKey, secret: str | None = None) -> ApiKey:
    """The API key object of `record` (its secret only when given: once, at issue)."""
    view = api_key_view(
        record.key, record.org, utc_now(), secret=secret, last_used_at=record.last_used_at
    )
    return msgspec.convert(view, ApiKey)


def key_cursor(key_id: str) -> str:
    """An opaque token for the page after the key `key_id`."""
    raw = msgspec.json.encode([_CURSOR_TAG, key_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_key_cursor(text: str) -> UUID:
    """The key a `key_cursor` names; ValidationError (422) for anything it did not make."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        tag, key_id = msgspec.json.decode(raw, type=tuple[str, str])
        if tag != _CURSOR_TAG:
            raise ValueError(tag)
        return parse_key_id(key_id)
    except (binascii.Error, ValueError, msgspec.DecodeError, ValidationError):
        raise ValidationError("cursor: not a cursor from this API") from None


class ApiKeysController(Controller):
    path = "/v1/api-keys"
    tags = ["api keys"]
    security = [{"BearerAuth": []}]
    dependencies = {"management": provide_key_management("api_keys.last_used_unavailable")}

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        opt={"command": Command.CREATE_KEY},
        cache_control=SHOWS_A_SECRET,
    )
    async def create_key(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        management: NamedDependency[KeyManagement],
        data: JSONBody[NewApiKey],
    ) -> ApiKey:
        """Create a key; the response is the only time its secret is shown."""
        principal = request.user
        order = KeyOrder.asked(
            data.name,
            data.env or principal.env,
            key_type=data.type,
            permissions=data.permissions,
            expires_at=data.expires_at,
            allowed_origins=data.allowed_origins,
            allowed_ips=data.allowed_ips,
        )
        new = await asyncio.to_thread(management.create, principal, principal.org_id, order)
        await services.mirror.refresh_after_write()
        return _view(new.record, new.secret)

    @get("/", opt={"command": Command.READ_KEYS})
    async def list_keys(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        management: NamedDependency[KeyManagement],
        as_of: Annotated[
            str | None,
            QueryParameter(description="RFC 3339 time: the keys as they were at that instant."),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = MAX_PAGE,
        cursor: Annotated[
            str | None, QueryParameter(description="The previous page's `next_cursor`.")
        ] = None,
    ) -> ApiKeyList:
        """The organization's keys, oldest first; never their secrets.

        With `as_of`, the keys as they were at that instant, computed from their history.
        Page with `limit` and `cursor=next_cursor` while `next_cursor` is not null.
        """
        principal = request.user
        after = None if cursor is None else parse_key_cursor(cursor)
        if as_of is not None:
            moment = parse_moment(as_of)
            past = await asyncio.to_thread(
                History(services.registry, principal).keys_as_of, principal.org_id, moment
            )
            ids = [parse_key_id(view["id"]) for view in past]
            views, more = page_after(past, ids, after, limit)
            page = msgspec.convert(views, list[ApiKey])
            return ApiKeyList(data=page, next_cursor=_next(page, more), as_of=moment)

        listing, more = await asyncio.to_thread(
            management.org_key_page, principal, principal.org_id, after=after, limit=limit
        )
        data = [_view(record) for record in listing.keys]
        return ApiKeyList(data=data, next_cursor=_next(data, more))

    # Any valid key may ask which key it is. The card's response is encoded once per change.
    @get(
        "/current",
        opt={"command": None},
        responses={
            200: ResponseSpec(ApiKey, description="The API key object", generate_examples=False)
        },
    )
    async def current_key(
        self, request: Request[Principal, Any, Any], services: NamedDependency[Services]
    ) -> ASGIResponse:
        """Which key this is: its organization, environment, permissions and limit."""
        card = await services.cards.card(request.user.key_id)
        return card.response(utc_now())

    @get("/{key_id:str}", opt={"command": Command.READ_KEYS})
    async def get_key(
        self,
        request: Request[Principal, Any, Any],
        management: NamedDependency[KeyManagement],
        key_id: FromPath[str],
    ) -> ApiKey:
        """One of the organization's keys."""
        return _view(await asyncio.to_thread(management.key, request.user, key_ref(key_id)))

    @patch("/{key_id:str}", opt={"command": Command.RENAME_KEY})
    async def rename_key(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        management: NamedDependency[KeyManagement],
        key_id: FromPath[str],
        data: JSONBody[ApiKeyChange],
    ) -> ApiKey:
        """Rename a key and/or replace its IP allowlist (`allowed_ips`, CIDR; [] = anywhere)."""
        if data.name is None and data.allowed_ips is None:
            raise ApiError(422, "validation_error", "body: give name and/or allowed_ips")
        key = await asyncio.to_thread(
            management.change,
            request.user,
            key_ref(key_id),
            name=data.name,
            allowed_ips=data.allowed_ips,
        )
        # Its allowed IPs for authentication, its name for cards.
        await services.mirror.refresh_after_write()
        return _view(await asyncio.to_thread(management.record, key))

    @post(
        "/{key_id:str}/roll",
        status_code=HTTP_200_OK,
        opt={"command": Command.ROLL_KEY},
        cache_control=SHOWS_A_SECRET,
    )
    async def roll_key(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        management: NamedDependency[KeyManagement],
        key_id: FromPath[str],
        data: JSONBody[Roll | None] = None,
    ) -> ApiKey:
        """Issue a successor (secret shown once); the old key expires after the grace period."""
        roll = data or Roll()
        idle = roll.revoke_when_idle_minutes
        new = await asyncio.to_thread(
            partial(
                management.roll,
                request.user,
                key_ref(key_id),
                grace=timedelta(seconds=roll.expire_in_seconds),
                expires_at=roll.expires_at,
                revoke_when_idle=None if idle is None else timedelta(minutes=idle),
            )
        )
        await services.mirror.refresh_after_write()
        return _view(new.record, new.secret)

    @post("/{key_id:str}/revoke", status_code=HTTP_200_OK, opt={"command": Command.REVOKE_KEY})
    async def revoke_key(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        management: NamedDependency[KeyManagement],
        key_id: FromPath[str],
        data: JSONBody[Revocation | None] = None,
    ) -> ApiKey:
        """Revoke a key at once, on every API process within a second."""
        key = await asyncio.to_thread(
            management.revoke, request.user, key_ref(key_id), reason=(data or Revocation()).reason
        )
        await services.mirror.refresh_after_write()
        return _view(await asyncio.to_thread(management.record, key))


def _next(page: list[ApiKey], more: bool) -> str | None:
    return key_cursor(page[-1].id) if more and page else None


__all__ = ["UUID", "ApiKeysController"]
