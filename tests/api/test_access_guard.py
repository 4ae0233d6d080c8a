"""The key gate asks the access policy, and fails closed for a route that names no rule."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import httpx
from litestar import Litestar, get

from api.app import route_commands
from api.auth import KeyGate
from api.edge import EdgeMiddleware
from api.errors import EXCEPTION_HANDLERS
from domain.access import Command
from domain.key_format import Environment, KeyType
from domain.plans import Permission
from projections.key_lookup import Principal


@get("/v1/forgotten", sync_to_thread=False)
def forgotten() -> dict[str, str]:
    return {"secret": "data"}


@get("/v1/open", opt={"command": None}, sync_to_thread=False)
def open_to_any_key() -> dict[str, str]:
    return {"ok": "yes"}


@get("/v1/audit-only", opt={"command": Command.READ_AUDIT}, sync_to_thread=False)
def audit_only() -> dict[str, str]:
    return {"audit": "rows"}


class OneKey:
    """Authentication stands in here: every request is this (affiliates-only) key."""

    async def authenticate(self, scope: Any, context: Any) -> Principal:
        return Principal(
            key_id=uuid.uuid4(),
            org_id=uuid.uuid4(),
            env=Environment.LIVE,
            type=KeyType.SECRET,
            permissions=frozenset({Permission.AFFILIATES_READ}),
            hint="ak_live_…abcd",
            rate_limit=100,
            allowed_origins=(),
        )


async def get_path(path: str) -> httpx.Response:
    litestar = Litestar(
        route_handlers=[forgotten, open_to_any_key, audit_only],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    one_key: Any = OneKey()
    gate = KeyGate(litestar, authenticator=one_key, route_command=route_commands(litestar))
    services: Any = SimpleNamespace(publisher=None, exposure=None)
    edge = EdgeMiddleware(gate, services=services, require_https=False)
    transport = httpx.ASGITransport(app=edge)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        return await client.get(path)


async def test_a_v1_route_that_declares_no_command_is_refused_not_served() -> None:
    response = await get_path("/v1/forgotten")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "data" not in response.text


async def test_a_route_that_declares_command_none_is_open_to_any_authenticated_key() -> None:
    response = await get_path("/v1/open")
    assert response.status_code == 200


async def test_a_key_without_the_commands_permission_is_refused_before_the_handler() -> None:
    response = await get_path("/v1/audit-only")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_permissions"
    assert "rows" not in response.text
