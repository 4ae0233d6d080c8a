"""Restricted keys: an IP allowlist, an expiry, a subset of permissions; plan changes in <1 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import nats
import pytest

from adapters import nats as nats_adapter
from adapters.settings import Settings
from api import key_mirror
from application.registry import IssuedKey
from application.stores import open_registry
from domain.actors import OPERATOR
from domain.ids import format_key_id
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Permission, Plan
from support.api import Api, assert_error, bearer
from workers.relay import Relay


async def restricted(
    api: Api, org: Organization, *, allowed_ips: tuple[str, ...] = (), **options: object
) -> IssuedKey:
    issued = api.registry.create_key(
        org.id,
        name="restricted",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
        allowed_ips=allowed_ips,
        **options,  # type: ignore[arg-type]
    )
    await api.process.services.mirror.refresh()
    return issued


def from_address(api: Api, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=api.process.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="https://api.test")


async def test_a_key_used_from_outside_its_ip_allowlist_is_403_ip_not_allowed(api: Api) -> None:
    issued = await restricted(api, api.org(), allowed_ips=("203.0.113.0/24",))
    async with from_address(api, "198.51.100.9") as client:
        response = await client.get("/v1/affiliates", headers=bearer(issued))
    assert_error(response, 403, "ip_not_allowed")


async def test_a_key_used_from_inside_its_ip_allowlist_works(api: Api) -> None:
    issued = await restricted(api, api.org(), allowed_ips=("203.0.113.0/24",))
    async with from_address(api, "203.0.113.77") as client:
        response = await client.get("/v1/affiliates", headers=bearer(issued))
    assert response.status_code == 200, response.text


async def test_the_allowlist_can_be_set_on_create_through_the_api(api: Api) -> None:
    admin = await api.key(api.org())
    created = await api.client.post(
        "/v1/api-keys",
        json={"name": "office only", "allowed_ips": ["203.0.113.5"]},
        headers=bearer(admin),
    )
    assert created.status_code == 201, created.text
    assert created.json()["allowed_ips"] == ["203.0.113.5/32"]
    async with from_address(api, "198.51.100.9") as client:
        response = await client.get("/v1/affiliates", headers=bearer(created.json()["key"]))
    assert_error(response, 403, "ip_not_allowed")


async def test_changing_the_allowlist_takes_effect_at_once(api: Api) -> None:
    org = api.org()
    admin = await api.key(org)
    issued = await restricted(api, org, allowed_ips=("203.0.113.0/24",))
    changed = await api.client.patch(
        f"/v1/api-keys/{format_key_id(issued.key.id)}",
        json={"allowed_ips": ["198.51.100.0/24"]},
        headers=bearer(admin),
    )
    assert changed.status_code == 200, changed.text
    async with from_address(api, "198.51.100.9") as client:
        response = await client.get("/v1/affiliates", headers=bearer(issued))
    assert response.status_code == 200, response.text


async def test_a_malformed_cidr_on_create_is_422_validation_error(api: Api) -> None:
    admin = await api.key(api.org())
    response = await api.client.post(
        "/v1/api-keys",
        json={"name": "bad", "allowed_ips": ["not-a-network"]},
        headers=bearer(admin),
    )
    assert_error(response, 422, "validation_error")


async def test_a_key_past_its_expiry_time_is_401_api_key_expired(api: Api) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1)
    issued = await restricted(api, api.org(), expires_at=soon)
    await asyncio.sleep(1.1)
    response = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert_error(response, 401, "api_key_expired")


async def test_a_key_restricted_to_reading_cannot_write(api: Api) -> None:
    issued = await restricted(api, api.org(), permissions=frozenset({Permission.AFFILIATES_READ}))
    assert (await api.client.get("/v1/affiliates", headers=bearer(issued))).status_code == 200
    response = await api.client.post("/v1/affiliates", json={"name": "x"}, headers=bearer(issued))
    assert_error(response, 403, "insufficient_permissions")


@pytest.fixture
async def relay(api_settings: Settings) -> AsyncIterator[None]:
    """The outbox relay, store → NATS, as `icodrip worker relay` runs it."""
    registry = open_registry(api_settings)
    assert api_settings.nats_url is not None
    client = await nats.connect(api_settings.nats_url)
    js = client.jetstream()
    await nats_adapter.ensure_keys_stream(js, api_settings.keys_stream, api_settings.keys_subject)
    worker = Relay(
        registry, js, stream=api_settings.keys_stream, subject_prefix=api_settings.keys_subject
    )
    task = asyncio.create_task(worker.run())
    yield
    worker.stop()
    await task
    await client.drain()
    registry.close()


async def test_a_plan_change_reaches_every_key_within_a_second_through_nats(
    api: Api, api_settings: Settings, relay: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = api.org(Plan.PRO)
    issued = await api.key(org)
    # Only the NATS wake-up may deliver the change: the mirror's fallback poll is made slow.
    monkeypatch.setattr(key_mirror, "POLL_INTERVAL", 30.0)
    await asyncio.sleep(1.2)  # the poll in flight (1 s) ends; the next one waits 30 s
    operator = open_registry(api_settings)  # another process: the operator's CLI
    try:
        operator.change_plan(org.id, Plan.FREE, OPERATOR)
    finally:
        operator.close()
    started = time.monotonic()
    while True:
        response = await api.client.get("/v1/audit/requests", headers=bearer(issued))
        if response.status_code == 403:
            break
        assert time.monotonic() - started < 1.0, "the plan change took over a second"
        await asyncio.sleep(0.02)
    assert_error(response, 403, "insufficient_permissions")
