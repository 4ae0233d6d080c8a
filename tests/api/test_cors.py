"""CORS: browsers may call POST /v1/events from a public key's allowed origins, and nothing else."""

from __future__ import annotations

from application.registry import IssuedKey
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from support.api import Api, assert_error, bearer

ALLOWED = "https://shop.example.com"
OTHER = "https://evil.example.net"


async def public_key(api: Api, *origins: str) -> IssuedKey:
    issued = api.registry.create_key(
        api.org().id,
        name="web sdk",
        env=Environment.LIVE,
        key_type=KeyType.PUBLIC,
        actor=OPERATOR,
        allowed_origins=origins,
    )
    await api.process.services.mirror.refresh()
    return issued


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_a_preflight_from_an_allowed_origin_is_answered_with_cors_headers(
    api: Api,
) -> None:
    await public_key(api, ALLOWED)
    response = await api.client.options("/v1/events", headers=preflight(ALLOWED))
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"]
    assert "Origin" in response.headers["vary"]


async def test_a_preflight_from_another_origin_is_403_origin_not_allowed(api: Api) -> None:
    await public_key(api, ALLOWED)
    response = await api.client.options("/v1/events", headers=preflight(OTHER))
    assert_error(response, 403, "origin_not_allowed")
    assert "access-control-allow-origin" not in response.headers


async def test_a_preflight_for_another_method_is_refused(api: Api) -> None:
    await public_key(api, ALLOWED)
    response = await api.client.options("/v1/events", headers=preflight(ALLOWED, "DELETE"))
    assert_error(response, 403, "origin_not_allowed")


async def test_a_preflight_for_any_other_route_is_403_secret_key_in_browser(api: Api) -> None:
    await public_key(api, ALLOWED)
    response = await api.client.options("/v1/affiliates", headers=preflight(ALLOWED, "GET"))
    assert_error(response, 403, "secret_key_in_browser")
    assert "access-control-allow-origin" not in response.headers


async def test_a_revoked_public_keys_origin_is_no_longer_answered(api: Api) -> None:
    origin = "https://revoked-only.example.org"
    issued = await public_key(api, origin)
    api.registry.revoke_key(issued.key.id, actor=OPERATOR)
    await api.process.services.mirror.refresh()
    response = await api.client.options("/v1/events", headers=preflight(origin))
    assert_error(response, 403, "origin_not_allowed")


async def test_the_request_from_an_allowed_origin_gets_access_control_allow_origin(
    api: Api,
) -> None:
    issued = await public_key(api, ALLOWED)
    response = await api.client.post(
        "/v1/events", json={"event": "view"}, headers={**bearer(issued), "Origin": ALLOWED}
    )
    assert response.status_code == 202, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED


async def test_a_request_from_an_origin_its_key_does_not_list_is_403_origin_not_allowed(
    api: Api,
) -> None:
    await public_key(api, OTHER)  # some other key allows OTHER: the preflight would pass
    issued = await public_key(api, ALLOWED)
    response = await api.client.post(
        "/v1/events", json={"event": "view"}, headers={**bearer(issued), "Origin": OTHER}
    )
    assert_error(response, 403, "origin_not_allowed")
    assert "access-control-allow-origin" not in response.headers


async def test_a_public_key_without_allowed_origins_is_refused_from_any_browser(
    api: Api,
) -> None:
    issued = await public_key(api)
    response = await api.client.post(
        "/v1/events", json={"event": "view"}, headers={**bearer(issued), "Origin": ALLOWED}
    )
    assert_error(response, 403, "origin_not_allowed")
