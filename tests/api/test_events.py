"""`POST /v1/events`: public keys send tracking events, validated, size-limited, per org/env."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from adapters.affiliates import encode_cursor as encode_affiliates_cursor
from adapters.tracked_events import encode_cursor
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


# -- batches -------------------------------------------------------------------------------


async def test_a_batch_is_stored_in_order_and_answered_with_the_list(api: Api) -> None:
    org = api.org()
    issued = await public_key(api, org)
    batch = [{"event": "view", "properties": {"page": n}} for n in range(3)]
    response = await api.client.post("/v1/events", json={"batch": batch}, headers=bearer(issued))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["object"] == "list" and body["next_cursor"] is None
    assert [e["object"] for e in body["data"]] == ["event"] * 3
    assert stored(api, org) == [("view", f'{{"page":{n}}}') for n in range(3)]
    store = api.process.services.tracked_events
    in_order = [e.id for e in store.page(format_org_id(org.id), "live", 0, 10)]
    assert [e["id"] for e in body["data"]] == in_order


async def test_one_invalid_event_refuses_the_batch_by_its_index_and_stores_nothing(
    api: Api,
) -> None:
    org = api.org()
    issued = await public_key(api, org)
    batch = [{"event": "ok"}, {"event": "ok"}, {"event": ""}]
    response = await api.client.post("/v1/events", json={"batch": batch}, headers=bearer(issued))
    body = assert_error(response, 422, "validation_error")
    assert body["error"]["message"].startswith("batch[2]")
    assert stored(api, org) == []


async def test_a_batch_events_timestamp_out_of_range_is_named_by_its_index(api: Api) -> None:
    org = api.org()
    issued = await public_key(api, org)
    old = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    batch = [{"event": "ok"}, {"event": "late", "timestamp": old}]
    response = await api.client.post("/v1/events", json={"batch": batch}, headers=bearer(issued))
    body = assert_error(response, 422, "validation_error")
    assert body["error"]["message"].startswith("batch[1].timestamp:")
    assert stored(api, org) == []


@pytest.mark.parametrize("size", [0, 101])
async def test_a_batch_of_other_than_1_to_100_events_is_422(api: Api, size: int) -> None:
    issued = await public_key(api, api.org())
    batch = [{"event": "v"}] * size
    response = await api.client.post("/v1/events", json={"batch": batch}, headers=bearer(issued))
    assert_error(response, 422, "validation_error")


async def test_an_event_beside_a_batch_is_422(api: Api) -> None:
    issued = await public_key(api, api.org())
    response = await api.client.post(
        "/v1/events", json={"event": "v", "batch": [{"event": "w"}]}, headers=bearer(issued)
    )
    assert_error(response, 422, "validation_error")


async def test_a_batch_of_up_to_64_kib_is_accepted(api: Api) -> None:
    org = api.org()
    issued = await public_key(api, org)
    batch = [{"event": "v", "properties": {"blob": "x" * 12_000}} for _ in range(5)]
    response = await api.client.post("/v1/events", json={"batch": batch}, headers=bearer(issued))
    assert response.status_code == 202, response.text
    assert len(stored(api, org)) == 5


async def test_a_batch_over_64_kib_is_413_payload_too_large(api: Api) -> None:
    issued = await public_key(api, api.org())
    batch = [{"event": "v", "properties": {"blob": "x" * 14_000}} for _ in range(5)]
    response = await api.client.post("/v1/events", json={"batch": batch}, headers=bearer(issued))
    assert_error(response, 413, "payload_too_large")


async def test_an_event_over_16_kib_in_a_batch_is_422_by_its_index(api: Api) -> None:
    org = api.org()
    issued = await public_key(api, org)
    batch = [{"event": "v"}, {"event": "v", "properties": {"blob": "x" * 20_000}}]
    response = await api.client.post("/v1/events", json={"batch": batch}, headers=bearer(issued))
    body = assert_error(response, 422, "validation_error")
    assert body["error"]["message"].startswith("batch[1]:")
    assert stored(api, org) == []


# -- reading what was tracked ------------------------------------------------------------------


async def test_a_secret_key_lists_its_orgs_events_with_properties_and_sending_key(
    api: Api,
) -> None:
    org = api.org()
    sender = await public_key(api, org)
    properties = {"plan": "pro", "seats": 3, "tags": ["a", "é"], "nested": {"ok": True}}
    await api.client.post(
        "/v1/events", json={"event": "signup", "properties": properties}, headers=bearer(sender)
    )
    response = await api.client.get("/v1/events", headers=bearer(await api.key(org)))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    (event,) = response.json()["data"]
    assert event["event"] == "signup" and event["object"] == "event" and event["env"] == "live"
    assert event["properties"] == properties
    assert event["key_id"] == f"key_{sender.key.id.hex}"
    assert response.json()["next_cursor"] is None


async def test_the_list_pages_by_cursor_oldest_first(api: Api) -> None:
    org = api.org()
    batch = [{"event": f"e{n}"} for n in range(5)]
    await api.client.post(
        "/v1/events", json={"batch": batch}, headers=bearer(await public_key(api, org))
    )
    reader = bearer(await api.key(org))
    names: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/events", params=params, headers=reader)).json()
        names += [e["event"] for e in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == [f"e{n}" for n in range(5)]
    assert pages == 3


async def test_a_test_key_lists_test_events_only(api: Api) -> None:
    org = api.org()
    for env in (Environment.LIVE, Environment.TEST):
        sender = await public_key(api, org, env)
        await api.client.post("/v1/events", json={"event": env.value}, headers=bearer(sender))
    response = await api.client.get(
        "/v1/events", headers=bearer(await api.key(org, Environment.TEST))
    )
    assert [e["event"] for e in response.json()["data"]] == ["test"]


async def test_another_orgs_events_are_not_listed(api: Api) -> None:
    await api.client.post(
        "/v1/events", json={"event": "theirs"}, headers=bearer(await public_key(api, api.org()))
    )
    response = await api.client.get("/v1/events", headers=bearer(await api.key(api.org())))
    assert response.json()["data"] == []


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("nope", id="not base64 of a cursor"),
        pytest.param(encode_affiliates_cursor(3), id="an affiliates cursor"),
        pytest.param(encode_cursor(10**30), id="beyond any row"),
        pytest.param("ZTotMQ", id="a negative position"),  # base64 of "e:-1"
        pytest.param("%%%", id="not base64"),
    ],
)
async def test_a_foreign_or_damaged_cursor_is_422_validation_error(api: Api, cursor: str) -> None:
    org = api.org()
    response = await api.client.get(
        "/v1/events", params={"cursor": cursor}, headers=bearer(await api.key(org))
    )
    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize("limit", ["0", "101", "x"])
async def test_a_limit_outside_1_to_100_is_422_validation_error(api: Api, limit: str) -> None:
    response = await api.client.get(
        "/v1/events", params={"limit": limit}, headers=bearer(await api.key(api.org()))
    )
    assert_error(response, 422, "validation_error")


async def test_a_public_key_cannot_read_events(api: Api) -> None:
    issued = await public_key(api, api.org())
    response = await api.client.get("/v1/events", headers=bearer(issued))
    assert_error(response, 403, "insufficient_permissions")
