"""A secret key seen from a browser or over plain HTTP is refused and flagged as exposed."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import httpx
import pytest
from structlog.testing import capture_logs

from application.history import History
from domain.actors import OPERATOR
from domain.ids import format_key_id
from domain.key_format import Environment, KeyType
from support.api import Api, assert_error, bearer


async def flagged(api: Api) -> None:
    """Wait for the background flagging of this process to be recorded."""
    exposure = api.process.services.exposure
    assert exposure is not None
    await exposure.drain()


def exposed_events(api: Api, key_id: UUID) -> list[dict[str, Any]]:
    history = History(api.registry, OPERATOR).key_history(key_id)
    return [e for e in history if e["type"] == "api_key.exposed"]


async def test_a_secret_key_sent_with_an_origin_is_403_secret_key_in_browser(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.get(
        "/v1/affiliates", headers={**bearer(issued), "Origin": "https://app.example.com"}
    )
    assert_error(response, 403, "secret_key_in_browser")
    assert issued.secret not in response.text


async def test_a_secret_key_sent_in_a_cors_fetch_without_origin_is_refused_too(
    api: Api,
) -> None:
    issued = await api.key(api.org())
    response = await api.client.get(
        "/v1/affiliates", headers={**bearer(issued), "Sec-Fetch-Mode": "cors"}
    )
    assert_error(response, 403, "secret_key_in_browser")


async def test_a_secret_key_from_a_browser_is_flagged_exposed_on_the_key_object(
    api: Api,
) -> None:
    org = api.org()
    issued, admin = await api.key(org), await api.key(org)
    await api.client.get(
        "/v1/affiliates", headers={**bearer(issued), "Origin": "https://app.example.com"}
    )
    await flagged(api)
    key_id = format_key_id(issued.key.id)
    shown = await api.client.get(f"/v1/api-keys/{key_id}", headers=bearer(admin))
    body = shown.json()
    assert body["exposed_at"] is not None
    assert body["exposure"] == [{"source": "browser", "detail": "origin https://app.example.com"}]


async def test_the_browser_flag_is_in_the_keys_history_with_the_system_as_actor(
    api: Api,
) -> None:
    issued = await api.key(api.org())
    await api.client.get(
        "/v1/affiliates", headers={**bearer(issued), "Origin": "https://app.example.com"}
    )
    await flagged(api)
    (event,) = exposed_events(api, issued.key.id)
    assert event["actor"] == "system"
    assert event["data"]["source"] == "browser"


async def test_a_key_seen_from_a_browser_many_times_is_flagged_once(api: Api) -> None:
    issued = await api.key(api.org())
    for _ in range(3):
        await api.client.get(
            "/v1/affiliates", headers={**bearer(issued), "Origin": "https://app.example.com"}
        )
    await flagged(api)
    assert len(exposed_events(api, issued.key.id)) == 1


async def test_a_secret_key_without_browser_signals_is_not_flagged(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert response.status_code == 200
    await flagged(api)
    assert exposed_events(api, issued.key.id) == []


async def test_a_secret_key_over_plain_http_through_the_trusted_proxy_is_flagged(
    api: Api,
) -> None:
    issued = await api.key(api.org())
    transport = httpx.ASGITransport(app=api.process.app, client=("10.0.0.5", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as proxy:
        response = await proxy.get(
            "/v1/affiliates", headers={**bearer(issued), "X-Forwarded-Proto": "http"}
        )
    assert_error(response, 400, "https_required")
    await flagged(api)
    (event,) = exposed_events(api, issued.key.id)
    assert event["data"]["source"] == "plain_http"
    assert issued.secret not in str(event)


async def test_a_public_key_over_plain_http_is_not_flagged(api: Api) -> None:
    issued = api.registry.create_key(
        api.org().id,
        name="web",
        env=Environment.LIVE,
        key_type=KeyType.PUBLIC,
        actor=OPERATOR,
    )
    await api.process.services.mirror.refresh()
    transport = httpx.ASGITransport(app=api.process.app, client=("10.0.0.5", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as proxy:
        plain = {**bearer(issued), "X-Forwarded-Proto": "http"}
        await proxy.post("/v1/events", json={"event": "v"}, headers=plain)
    await flagged(api)
    assert exposed_events(api, issued.key.id) == []


async def test_the_refusal_does_not_wait_for_the_event_store(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = await api.key(api.org())
    real = api.registry.flag_exposed

    def slow_flag(*args: Any, **kwargs: Any) -> bool:
        time.sleep(1.5)  # a store under load
        return real(*args, **kwargs)

    monkeypatch.setattr(api.registry, "flag_exposed", slow_flag)
    started = time.monotonic()
    response = await api.client.get(
        "/v1/affiliates", headers={**bearer(issued), "Origin": "https://app.example.com"}
    )
    elapsed = time.monotonic() - started
    assert_error(response, 403, "secret_key_in_browser")
    assert elapsed < 0.5, f"the refusal waited {elapsed:.2f} s"
    await flagged(api)
    assert len(exposed_events(api, issued.key.id)) == 1


async def test_the_secret_never_reaches_the_logs(api: Api) -> None:
    issued = await api.key(api.org())
    with capture_logs() as logs:
        await api.client.get(
            "/v1/affiliates", headers={**bearer(issued), "Origin": "https://app.example.com"}
        )
        await flagged(api)
    assert logs, "expected the refusal and the flag to be logged"
    assert issued.secret not in repr(logs)
