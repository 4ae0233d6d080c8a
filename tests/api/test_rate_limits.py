"""Each key gets its plan's requests per minute, and every response says where it stands."""

from __future__ import annotations

import time

from domain.actors import OPERATOR
from domain.plans import Plan
from support.api import Api, assert_error, bearer
from support.windows import early_in_a_window


async def test_every_authenticated_response_carries_the_rate_limit_headers(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.get("/v1/affiliates", headers=bearer(issued))
    headers = response.headers
    assert headers["x-ratelimit-limit"] == "100"
    assert headers["x-ratelimit-remaining"] == "99"
    reset = int(headers["x-ratelimit-reset"])
    assert time.time() < reset <= time.time() + 61
    assert headers["ratelimit-policy"] == '"per-key";q=100;w=60'
    assert headers["ratelimit"].startswith('"per-key";r=99;t=')
    assert "retry-after" not in headers


async def test_the_101st_request_in_a_minute_is_429_with_retry_after(api: Api) -> None:
    issued = await api.key(api.org())
    await early_in_a_window(20)
    statuses = [
        (await api.client.get("/v1/affiliates", headers=bearer(issued))).status_code
        for _ in range(101)
    ]
    assert statuses == [200] * 100 + [429]
    response = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert_error(response, 429, "rate_limit_exceeded")
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(response.headers["retry-after"]) <= 60


async def test_limits_are_per_key(api: Api) -> None:
    org = api.org()
    first, second = await api.key(org), await api.key(org)
    for _ in range(3):
        await api.client.get("/v1/affiliates", headers=bearer(first))
    response = await api.client.get("/v1/affiliates", headers=bearer(second))
    assert response.headers["x-ratelimit-remaining"] == "99"


async def test_an_agency_orgs_custom_limit_applies_to_its_keys(api: Api) -> None:
    org = api.org(Plan.AGENCY)
    api.registry.set_rate_limit(org.id, 2500, OPERATOR)
    issued = await api.key(org)
    response = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert response.headers["x-ratelimit-limit"] == "2500"


async def test_403_responses_carry_the_rate_limit_headers_too(api: Api) -> None:
    from domain.plans import Permission

    reader = await api.key(api.org(), permissions={Permission.AFFILIATES_READ})
    response = await api.client.post("/v1/affiliates", json={"name": "x"}, headers=bearer(reader))
    assert response.status_code == 403
    assert response.headers["x-ratelimit-limit"] == "100"
