"""Behind a trusted proxy, the scheme and the client address are the proxy's own entries: the
rightmost value of `X-Forwarded-Proto` and of `X-Forwarded-For`, whether the values come
comma-separated in one header or in repeated headers. Whatever a client put to the left of
them (the proxy appends, it does not replace) is not believed.

The edge middleware alone, around an app that answers with the client address it was given.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from api.context import request_context
from api.edge import EdgeMiddleware

PROXY = ("10.9.8.7", 40000)
STRANGER = ("192.0.2.50", 40000)


async def _client_address_app(scope: Any, receive: Any, send: Any) -> None:
    body = (request_context(scope).client_addr or "").encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def request(headers: list[tuple[str, str]], peer: tuple[str, int] = PROXY) -> httpx.Response:
    """A plain-HTTP request as the proxy (or `peer`) forwards it to the API."""
    edge = EdgeMiddleware(
        _client_address_app,
        services=SimpleNamespace(publisher=None, exposure=None),  # type: ignore[arg-type]
        trusted_proxies=["10.0.0.0/8"],
    )
    transport = httpx.ASGITransport(app=edge, client=peer)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        return await client.get("/v1/affiliates", headers=headers)


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Forwarded-Proto", "https, http")],  # the client claimed https; the proxy saw http
        [("X-Forwarded-Proto", "https,http")],
        [("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")],
        [("X-Forwarded-Proto", "http"), ("X-Forwarded-Proto", "https, http")],
        [("X-Forwarded-Proto", "https, ")],  # the proxy's own entry is empty: not https
    ],
)
async def test_a_client_claiming_https_before_the_proxys_http_is_refused(
    headers: list[tuple[str, str]],
) -> None:
    response = await request(headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "https_required"


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Forwarded-Proto", "http, https")],  # whatever the client claimed, the proxy saw https
        [("X-Forwarded-Proto", "ftp , HTTPS")],
        [("X-Forwarded-Proto", "http"), ("X-Forwarded-Proto", "https")],
        [("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http, https")],
    ],
)
async def test_the_proxys_own_https_is_believed_whatever_the_client_put_before_it(
    headers: list[tuple[str, str]],
) -> None:
    response = await request(headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        (["198.51.100.7"], "198.51.100.7"),
        (["203.0.113.66, 198.51.100.7"], "198.51.100.7"),  # the client's own claim first
        (["203.0.113.66,198.51.100.7"], "198.51.100.7"),
        (["203.0.113.66", "198.51.100.7"], "198.51.100.7"),  # repeated headers
        (["1.1.1.1, 203.0.113.66", "2.2.2.2, 198.51.100.7"], "198.51.100.7"),
        (["198.51.100.7, "], PROXY[0]),  # no entry of the proxy's own: the proxy's address
    ],
)
async def test_the_client_address_is_the_proxys_rightmost_forwarded_for_entry(
    forwarded_for: list[str], expected: str
) -> None:
    headers = [("X-Forwarded-Proto", "https")]
    headers += [("X-Forwarded-For", value) for value in forwarded_for]
    response = await request(headers)
    assert response.status_code == 200, response.text
    assert response.text == expected


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored() -> None:
    response = await request(
        [("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "198.51.100.7")], peer=STRANGER
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "https_required"
