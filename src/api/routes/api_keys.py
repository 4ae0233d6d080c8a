"""`/v1/api-keys`: manage the organization's keys with a key (the dashboard has its own pages)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
import structlog
from litestar import Controller, Request, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.errors import ApiError
from api.services import Services
from application.history import History, parse_moment
from application.registry import utc_now
from application.views import api_key_view, iso
from domain.access import Command
from domain.api_key import ApiKey
from domain.errors import NotFound, ValidationError
from domain.ids import parse_key_id
from domain.key_format import Environment, KeyType
from domain.plans import parse_permissions
from projections.key_lookup import Principal
from projections.request_audit import LastUsed
from projections.request_audit_shared import last_used, last_used_at

log = structlog.get_logger()


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


class Revocation(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


def _key_uuid(key_id: str) -> UUID:
    """The id of the path's key; a malformed id names no key (404, like another org's)."""
    try:
        return parse_key_id(key_id)
    except ValidationError:
        raise NotFound("no such API key") from None


def _last_used(services: Services, key_ids: list[UUID]) -> dict[UUID, LastUsed]:
    # Last use comes from the audit model; when it is unavailable the keys still list.
    try:
        return last_used(services.settings, key_ids)
    except Exception as error:
        log.warning("api_keys.last_used_unavailable", error=type(error).__name__)
        return {}


async def _view(
    services: NamedDependency[Services], key: ApiKey, secret: str | None = None
) -> dict[str, Any]:
    def load() -> dict[str, Any]:
        org = services.registry.get_organization(key.org_id)
        used = None if secret is not None else _last_used(services, [key.id]).get(key.id)
        return api_key_view(key, org, utc_now(), secret=secret, last_used_at=last_used_at(used))

    return await asyncio.to_thread(load)


class ApiKeysController(Controller):
    path = "/v1/api-keys"
    tags = ["api keys"]
    security = [{"BearerAuth": []}]

    @post("/", status_code=HTTP_201_CREATED, opt={"command": Command.CREATE_KEY})
    async def create_key(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        data: JSONBody[NewApiKey],
    ) -> dict[str, Any]:
        """Create a key; the response is the only time its secret is shown."""
        principal = request.user
        issued = await asyncio.to_thread(
            services.registry.create_key,
            principal.org_id,
            name=data.name,
            env=Environment(data.env or principal.env),
            key_type=KeyType(data.type),
            actor=principal,
            permissions=None if data.permissions is None else parse_permissions(data.permissions),
            expires_at=data.expires_at,
            allowed_origins=tuple(data.allowed_origins),
            allowed_ips=tuple(data.allowed_ips),
        )
        await services.mirror.refresh()
        return await _view(services, issued.key, issued.secret)

    @get("/", opt={"command": Command.READ_KEYS})
    async def list_keys(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        as_of: Annotated[
            str | None,
            QueryParameter(description="RFC 3339 time: the keys as they were at that instant."),
        ] = None,
    ) -> dict[str, Any]:
        """The organization's keys, oldest first; never their secrets.

        With `as_of`, the keys as they were at that instant, computed from their history.
        """
        principal = request.user
        if as_of is not None:
            moment = parse_moment(as_of)
            past = await asyncio.to_thread(
                History(services.registry, principal).keys_as_of, principal.org_id, moment
            )
            return {"object": "list", "data": past, "next_cursor": None, "as_of": iso(moment)}

        def load() -> list[dict[str, Any]]:
            org = services.registry.get_organization(principal.org_id)
            now = utc_now()
            keys = services.registry.keys_for(principal, org.id)
            used = _last_used(services, [k.id for k in keys])
            return [
                api_key_view(k, org, now, last_used_at=last_used_at(used.get(k.id))) for k in keys
            ]

        return {"object": "list", "data": await asyncio.to_thread(load), "next_cursor": None}

    @get("/current", opt={"command": None})  # any valid key may ask which key it is
    async def current_key(
        self, request: Request[Principal, Any, Any], services: NamedDependency[Services]
    ) -> dict[str, Any]:
        """Which key this is: its organization, environment, permissions and limit."""
        key = await asyncio.to_thread(services.registry.get_key, request.user.key_id)
        return await _view(services, key)

    @get("/{key_id:str}", opt={"command": Command.READ_KEYS})
    async def get_key(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        key_id: FromPath[str],
    ) -> dict[str, Any]:
        """One of the organization's keys."""
        key = await asyncio.to_thread(services.registry.key_for, request.user, _key_uuid(key_id))
        return await _view(services, key)

    @patch("/{key_id:str}", opt={"command": Command.RENAME_KEY})
    async def rename_key(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        key_id: FromPath[str],
        data: JSONBody[ApiKeyChange],
    ) -> dict[str, Any]:
        """Rename a key and/or replace its IP allowlist (`allowed_ips`, CIDR; [] = anywhere)."""
        if data.name is None and data.allowed_ips is None:
            raise ApiError(422, "validation_error", "body: give name and/or allowed_ips")
        key = await asyncio.to_thread(
            services.registry.change_key,
            _key_uuid(key_id),
            actor=request.user,
            name=data.name,
            allowed_ips=data.allowed_ips,
        )
        if data.allowed_ips is not None:
            await services.mirror.refresh()
        return await _view(services, key)

    @post("/{key_id:str}/roll", status_code=HTTP_200_OK, opt={"command": Command.ROLL_KEY})
    async def roll_key(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        key_id: FromPath[str],
        data: JSONBody[Roll | None] = None,
    ) -> dict[str, Any]:
        """Issue a successor (secret shown once); the old key expires after the grace period."""
        grace = timedelta(seconds=(data or Roll()).expire_in_seconds)
        issued = await asyncio.to_thread(
            services.registry.roll_key, _key_uuid(key_id), grace=grace, actor=request.user
        )
        await services.mirror.refresh()
        return await _view(services, issued.key, issued.secret)

    @post("/{key_id:str}/revoke", status_code=HTTP_200_OK, opt={"command": Command.REVOKE_KEY})
    async def revoke_key(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        key_id: FromPath[str],
        data: JSONBody[Revocation | None] = None,
    ) -> dict[str, Any]:
        """Revoke a key at once, on every API process within a second."""
        key = await asyncio.to_thread(
            services.registry.revoke_key,
            _key_uuid(key_id),
            actor=request.user,
            reason=(data or Revocation()).reason,
        )
        await services.mirror.refresh()
        return await _view(services, key)


__all__ = ["UUID", "ApiKeysController"]
