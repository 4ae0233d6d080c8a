"""A public key's two limits: one address cannot spend the key's quota, and a refusal says which."""

from __future__ import annotations

import httpx
import pytest

from api import auth as auth_module
from application.registry import IssuedKey
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.plans import Plan
from support.api import Api, assert_error, bearer
from support.windows import early_in_a_window


def public_key(api: Api, requests_per_minute: int) -> IssuedKey:
    org = api.org(Plan.AGENCY)
    api.registry.set_rate_limit(org.id, requests_per_minute, OPERATOR)
    return api.registry.create_key(
        org.id, name="web sdk", env=Environment.LIVE, key_type=KeyType.PUBLIC, actor=OPERATOR
    )


def behind_proxy(api: Api) -> httpx.AsyncClient:
    """A client behind the trusted proxy (10.0.0.0/8), which names the address it serves."""
    transport = httpx.ASGITransport(app=api.process.app, client=("10.9.8.7", 40000))
    return httpx.AsyncClient(
        transport=transport, base_url="https://api.test", headers={"X-Forwarded-Proto": "https"}
    )


async def send(client: httpx.AsyncClient, issued: IssuedKey, address: str) -> httpx.Response:
    headers = {**bearer(issued), "X-Forwarded-For": address}
    return await client.post("/v1/events", json={"event": "view"}, headers=headers)


async def test_requests_refused_per_address_do_not_spend_the_keys_own_quota(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "PUBLIC_KEY_PER_ADDRESS_PER_MINUTE", 2)
    issued = public_key(api, requests_per_minute=5)
    await api.process.services.mirror.refresh()
    await early_in_a_window()
    async with behind_proxy(api) as client:
        noisy = [(await send(client, issued, "198.51.100.7")).status_code for _ in range(10)]
        other = await send(client, issued, "198.51.100.8")
    assert noisy == [202] * 2 + [429] * 8
    assert other.status_code == 202, other.text
    assert other.headers["x-ratelimit-remaining"] == "2"  # 5 - the noisy address's 2 - this one


async def test_a_per_address_refusal_names_the_per_address_policy_in_every_header(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "PUBLIC_KEY_PER_ADDRESS_PER_MINUTE", 2)
    issued = public_key(api, requests_per_minute=1000)
    await api.process.services.mirror.refresh()
    await early_in_a_window()
    async with behind_proxy(api) as client:
        admitted = [await send(client, issued, "198.51.100.9") for _ in range(2)]
        refused = await send(client, issued, "198.51.100.9")

    assert_error(refused, 429, "rate_limit_exceeded")
    headers = refused.headers
    assert headers["ratelimit-policy"] == '"per-address";q=2;w=60'
    assert headers["ratelimit"].startswith('"per-address";r=0;t=')
    # The X-RateLimit trio describes the same policy, so Remaining 0 and Reset explain the 429.
    assert (headers["x-ratelimit-limit"], headers["x-ratelimit-remaining"]) == ("2", "0")
    assert int(headers["x-ratelimit-reset"]) == int(admitted[0].headers["x-ratelimit-reset"])
    assert 1 <= int(headers["retry-after"]) <= 60
    # Admitted requests describe the key's own limit, as for every key.
    assert admitted[0].headers["ratelimit-policy"] == '"per-key";q=1000;w=60'
    assert admitted[0].headers["x-ratelimit-limit"] == "1000"


async def test_a_refusal_by_the_keys_own_limit_names_the_per_key_policy(api: Api) -> None:
    issued = public_key(api, requests_per_minute=1)
    await api.process.services.mirror.refresh()
    await early_in_a_window()
    async with behind_proxy(api) as client:
        first = await send(client, issued, "198.51.100.10")
        refused = await send(client, issued, "198.51.100.11")
    assert first.status_code == 202, first.text
    assert_error(refused, 429, "rate_limit_exceeded")
    assert refused.headers["ratelimit-policy"] == '"per-key";q=1;w=60'
    assert refused.headers["x-ratelimit-limit"] == "1"
