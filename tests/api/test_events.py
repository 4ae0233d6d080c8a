"""`POST /v1/events`: public keys send tracking events, validated, size-limited, per org/env."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api import auth as auth_module
from application.registry import IssuedKey
from domain.actors import OPERATOR
from domain.ids import format_org_id
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Plan
from support.api import Api, assert_error, bearer

ORIGIN = "https://shop.example.com"


async def public_key(api: Api, org: Organization, env: Environment = Environment.LIVE) -> IssuedKey:
    issued = api.registry.create_key(
        org.id,
        name="web sdk",
        env=env,
        key_type=KeyType.PUBLIC,
        actor=OPERATOR,
        allowed_origins=(ORIGIN,),
    )
    await api.process.services.mirror.refresh()
    return issued


def stored(api: Api, org: Organization, env: str = "live") -> list[tuple[str, str]]:
    store = api.process.services.tracked_events
    assert store is not None
    return [(e.name, e.properties) for e in store.page(format_org_id(org.id), env, 0, 100)]


async def test_a_public_key_sends_an_event_that_is_stored_for_its_org(api: Api) -> None:
    org = api.org()
    issued = await public_key(api, org)
    response = await api.client.post(
        "/v1/events",
        json={"event": "signup", "properties": {"plan": "pro", "seats": 3}},
        headers=bearer(issued),
    )
    assert response.status_code == 202, response.text
    assert response.json()["object"] == "event"
    assert stored(api, org) == [("signup", '{"plan":"pro","seats":3}')]


async def test_a_test_keys_events_are_stored_in_test_mode_only(api: Api) -> None:
    org = api.org()
    issued = await public_key(api, org, Environment.TEST)
    response = await api.client.post("/v1/events", json={"event": "view"}, headers=bearer(issued))
    assert response.status_code == 202, response.text
    assert stored(api, org, "live") == []
    assert [name for name, _ in stored(api, org, "test")] == ["view"]


async def test_the_events_own_timestamp_is_kept(api: Api) -> None:
    org = api.org()
    issued = await public_key(api, org)
    when = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    response = await api.client.post(
        "/v1/events",
        json={"event": "view", "timestamp": when.isoformat()},
        headers=bearer(issued),
    )
    assert response.status_code == 202, response.text
    assert response.json()["timestamp"] == when.isoformat().replace("+00:00", "Z")


async def test_an_event_without_a_name_is_422_validation_error(api: Api) -> None:
    issued = await public_key(api, api.org())
    response = await api.client.post("/v1/events", json={"properties": {}}, headers=bearer(issued))
    assert_error(response, 422, "validation_error")


async def test_an_unknown_field_is_422_validation_error(api: Api) -> None:
    issued = await public_key(api, api.org())
    response = await api.client.post(
        "/v1/events", json={"event": "view", "user_password": "x"}, headers=bearer(issued)
    )
    assert_error(response, 422, "validation_error")


async def test_a_timestamp_a_month_old_is_422_validation_error(api: Api) -> None:
    issued = await public_key(api, api.org())
    old = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    response = await api.client.post(
        "/v1/events", json={"event": "view", "timestamp": old}, headers=bearer(issued)
    )
    assert_error(response, 422, "validation_error")


async def test_a_body_that_is_not_json_is_400_validation_error(api: Api) -> None:
    issued = await public_key(api, api.org())
    response = await api.client.post(
        "/v1/events",
        content=b"{not json",
        headers={**bearer(issued), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "validation_error")


async def test_an_event_over_16_kib_is_413_payload_too_large(api: Api) -> None:
    issued = await public_key(api, api.org())
    response = await api.client.post(
        "/v1/events",
        content=b'{"event": "view", "properties": {"blob": "' + b"x" * 20_000 + b'"}}',
        headers={**bearer(issued), "Content-Type": "application/json"},
    )
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/affiliates"), ("GET", "/v1/api-keys/current"), ("GET", "/v1/api-keys")],
)
async def test_a_public_key_on_any_other_route_is_403_public_key_not_allowed(
    api: Api, method: str, path: str
) -> None:
    issued = await public_key(api, api.org())
    response = await api.client.request(method, path, headers=bearer(issued))
    assert_error(response, 403, "public_key_not_allowed")


async def test_a_public_key_is_limited_per_client_address(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "PUBLIC_KEY_PER_ADDRESS_PER_MINUTE", 2)
    issued = await public_key(api, api.org())
    headers = {**bearer(issued), "X-Forwarded-For": "198.51.100.7"}
    proxy = proxied_client(api)
    async with proxy:
        for _ in range(2):
            ok = await proxy.post("/v1/events", json={"event": "v"}, headers=headers)
            assert ok.status_code == 202, ok.text
        refused = await proxy.post("/v1/events", json={"event": "v"}, headers=headers)
        assert_error(refused, 429, "rate_limit_exceeded")
        other = {**bearer(issued), "X-Forwarded-For": "198.51.100.8"}
        elsewhere = await proxy.post("/v1/events", json={"event": "v"}, headers=other)
        assert elsewhere.status_code == 202, elsewhere.text


async def test_a_public_key_is_limited_per_key_across_addresses(api: Api) -> None:
    org = api.org(Plan.AGENCY)
    api.registry.set_rate_limit(org.id, 2, OPERATOR)
    issued = await public_key(api, org)
    proxy = proxied_client(api)
    async with proxy:
        for address in ("198.51.100.1", "198.51.100.2"):
            headers = {**bearer(issued), "X-Forwarded-For": address}
            ok = await proxy.post("/v1/events", json={"event": "v"}, headers=headers)
            assert ok.status_code == 202, ok.text
        headers = {**bearer(issued), "X-Forwarded-For": "198.51.100.3"}
        refused = await proxy.post("/v1/events", json={"event": "v"}, headers=headers)
        assert_error(refused, 429, "rate_limit_exceeded")


def proxied_client(api: Api) -> httpx.AsyncClient:
    """A client behind the trusted proxy (10.0.0.0/8), which sets X-Forwarded-For."""
    transport = httpx.ASGITransport(app=api.process.app, client=("10.9.8.7", 40000))
    return httpx.AsyncClient(
        transport=transport,
        base_url="https://api.test",
        headers={"X-Forwarded-Proto": "https"},
    )
