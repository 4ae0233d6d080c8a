"""Driving an API process in tests: the Api handle, Bearer headers, error assertions."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from api.process import ApiProcess
from application.registry import IssuedKey, KeyRegistry
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Permission, Plan


@dataclass
class Api:
    """An API process, an HTTPS client for it, and the registry behind it."""

    process: ApiProcess
    client: httpx.AsyncClient
    registry: KeyRegistry

    def org(self, plan: Plan = Plan.PRO) -> Organization:
        return self.registry.register_organization(f"Org {uuid.uuid4().hex[:6]}", plan, OPERATOR)

    async def key(
        self,
        org: Organization,
        env: Environment = Environment.LIVE,
        *,
        permissions: set[Permission] | None = None,
        key_type: KeyType = KeyType.SECRET,
    ) -> IssuedKey:
        issued = self.registry.create_key(
            org.id,
            name="test key",
            env=env,
            key_type=key_type,
            actor=OPERATOR,
            permissions=None if permissions is None else frozenset(permissions),
        )
        await self.process.services.mirror.refresh()
        return issued


def bearer(issued: IssuedKey | str) -> dict[str, str]:
    secret = issued if isinstance(issued, str) else issued.secret
    return {"Authorization": f"Bearer {secret}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the contract's error shape with this status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return body  # type: ignore[no-any-return]


@asynccontextmanager
async def serving(process: ApiProcess) -> AsyncIterator[Api]:
    """Start the process, hand out an HTTPS client for it, stop it afterwards."""
    await process.start()
    # A client address of its own, so per-address limits of other tests do not interfere.
    address = "127." + ".".join(str(random.randint(1, 254)) for _ in range(3))
    transport = httpx.ASGITransport(app=process.app, client=(address, 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
            yield Api(process, client, process.services.registry)
    finally:
        await process.stop()
