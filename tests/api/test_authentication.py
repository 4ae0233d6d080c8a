"""Every request proves itself with one Bearer key over HTTPS; each failure has its own code."""

from __future__ import annotations

from datetime import timedelta

import httpx

from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType, generate_key
from domain.plans import Permission
from support.api import Api, assert_error, bearer
from support.windows import early_in_a_window


async def test_a_valid_key_gets_200(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": [], "next_cursor": None}


async def test_no_key_is_401_missing_api_key_with_a_bearer_challenge(api: Api) -> None:
    response = await api.client.get("/v1/affiliates")
    assert_error(response, 401, "missing_api_key")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_key_with_a_typo_is_401_malformed_api_key(api: Api) -> None:
    issued = await api.key(api.org())
    typo = issued.secret[:-1] + ("A" if issued.secret[-1] != "A" else "B")
    response = await api.client.get("/v1/affiliates", headers=bearer(typo))
    body = assert_error(response, 401, "malformed_api_key")
    assert "checksum" in body["error"]["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_scheme_other_than_bearer_is_401_malformed_api_key(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.get(
        "/v1/affiliates", headers={"Authorization": f"Basic {issued.secret}"}
    )
    assert_error(response, 401, "malformed_api_key")


async def test_bearer_is_case_insensitive(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.get(
        "/v1/affiliates", headers={"Authorization": f"bEaReR {issued.secret}"}
    )
    assert response.status_code == 200


async def test_two_authorization_headers_are_refused(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.get(
        "/v1/affiliates",
        headers=[("Authorization", f"Bearer {issued.secret}")] * 2,
    )
    assert_error(response, 401, "malformed_api_key")


async def test_a_well_formed_unknown_key_is_401_invalid_api_key(api: Api) -> None:
    stranger = generate_key(KeyType.SECRET, Environment.LIVE)
    response = await api.client.get("/v1/affiliates", headers=bearer(stranger))
    assert_error(response, 401, "invalid_api_key")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_revoked_key_is_401_api_key_revoked_at_once(api: Api) -> None:
    issued = await api.key(api.org())
    api.registry.revoke_key(issued.key.id, actor=OPERATOR)
    await api.process.services.mirror.refresh()
    response = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert_error(response, 401, "api_key_revoked")


async def test_a_key_past_its_grace_period_is_401_api_key_expired(api: Api) -> None:
    issued = await api.key(api.org())
    api.registry.roll_key(issued.key.id, grace=timedelta(0), actor=OPERATOR)
    await api.process.services.mirror.refresh()
    response = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert_error(response, 401, "api_key_expired")


async def test_a_key_lacking_the_permission_is_403(api: Api) -> None:
    reader = await api.key(api.org(), permissions={Permission.AFFILIATES_READ})
    response = await api.client.post("/v1/affiliates", json={"name": "Ann"}, headers=bearer(reader))
    body = assert_error(response, 403, "insufficient_permissions")
    assert "affiliates:write" in body["error"]["message"]


async def test_plain_http_is_refused_before_the_key_is_looked_at(api: Api) -> None:
    issued = await api.key(api.org())
    transport = httpx.ASGITransport(app=api.process.app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as plain:
        response = await plain.get("/v1/affiliates", headers=bearer(issued))
    assert_error(response, 400, "https_required")
    assert "x-ratelimit-limit" not in response.headers  # the key was never looked at


async def test_a_trusted_proxy_may_vouch_for_https(api: Api) -> None:
    issued = await api.key(api.org())
    transport = httpx.ASGITransport(app=api.process.app, client=("10.1.2.3", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as proxied:
        response = await proxied.get(
            "/v1/affiliates", headers={**bearer(issued), "X-Forwarded-Proto": "https"}
        )
    assert response.status_code == 200


async def test_an_untrusted_client_cannot_claim_https(api: Api) -> None:
    issued = await api.key(api.org())
    transport = httpx.ASGITransport(app=api.process.app, client=("192.0.2.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as sneaky:
        response = await sneaky.get(
            "/v1/affiliates", headers={**bearer(issued), "X-Forwarded-Proto": "https"}
        )
    assert_error(response, 400, "https_required")


async def test_every_response_carries_hsts(api: Api) -> None:
    for response in (
        await api.client.get("/v1/affiliates"),
        await api.client.get("/healthz"),
    ):
        assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_repeated_invalid_keys_from_one_address_are_slowed_down(api: Api) -> None:
    await early_in_a_window()
    statuses = []
    for _ in range(40):
        stranger = generate_key(KeyType.SECRET, Environment.LIVE)
        statuses.append(
            (await api.client.get("/v1/affiliates", headers=bearer(stranger))).status_code
        )
    assert statuses[:30] == [401] * 30
    assert set(statuses[30:]) == {429}
