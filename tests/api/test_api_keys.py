"""Managing keys with a key: the secret is shown once, and no key exceeds its creator."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.key_format import Environment, parse_key
from domain.plans import Permission, Plan
from projections.key_lookup_updater import KeyLookupUpdater
from support.api import Api, assert_error, bearer


async def test_a_created_key_is_returned_once_with_its_secret_and_works_at_once(api: Api) -> None:
    admin = await api.key(api.org())
    created = await api.client.post(
        "/v1/api-keys", json={"name": "Production Backend"}, headers=bearer(admin)
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert parse_key(body["key"]).env.value == "live"
    assert body["object"] == "api_key" and body["status"] == "active"
    assert body["hint"] == body["key"][:8] + "…" + body["key"][-4:]
    works = await api.client.get("/v1/affiliates", headers=bearer(body["key"]))
    assert works.status_code == 200

    listing = await api.client.get("/v1/api-keys", headers=bearer(admin))
    again = await api.client.get(f"/v1/api-keys/{body['id']}", headers=bearer(admin))
    assert body["key"] not in listing.text and body["key"] not in again.text
    assert "key" not in again.json()


async def test_current_tells_which_key_this_is(api: Api) -> None:
    org = api.org(Plan.PRO)
    issued = await api.key(org)
    response = await api.client.get("/v1/api-keys/current", headers=bearer(issued))
    body = response.json()
    assert body["id"] == f"key_{issued.key.id.hex}"
    assert body["organization"] == f"org_{org.id.hex}"
    assert "audit:read" in body["permissions"] and body["rate_limit_per_minute"] == 100
    assert "key" not in body


async def test_a_restricted_key_cannot_mint_a_more_powerful_key(api: Api) -> None:
    limited = await api.key(
        api.org(), permissions={Permission.API_KEYS_WRITE, Permission.AFFILIATES_READ}
    )
    response = await api.client.post(
        "/v1/api-keys",
        json={"name": "escalate", "permissions": ["affiliates:write"]},
        headers=bearer(limited),
    )
    assert_error(response, 403, "insufficient_permissions")
    inherited = await api.client.post(
        "/v1/api-keys", json={"name": "inherit"}, headers=bearer(limited)
    )
    assert inherited.status_code == 201
    assert set(inherited.json()["permissions"]) <= {"api_keys:write", "affiliates:read"}


async def test_a_test_key_cannot_create_live_keys(api: Api) -> None:
    from domain.key_format import Environment

    test_key = await api.key(api.org(), Environment.TEST)
    response = await api.client.post(
        "/v1/api-keys", json={"name": "x", "env": "live"}, headers=bearer(test_key)
    )
    assert_error(response, 403, "insufficient_permissions")


async def test_roll_returns_a_new_key_and_the_old_one_expires_after_the_grace(api: Api) -> None:
    admin = await api.key(api.org())
    rolled = await api.client.post(
        f"/v1/api-keys/key_{admin.key.id.hex}/roll",
        json={"expire_in_seconds": 3600},
        headers=bearer(admin),
    )
    assert rolled.status_code == 200, rolled.text
    new = rolled.json()
    assert new["rolled_from"] == f"key_{admin.key.id.hex}" and "key" in new
    old = (
        await api.client.get(f"/v1/api-keys/key_{admin.key.id.hex}", headers=bearer(new["key"]))
    ).json()
    assert old["status"] == "expiring" and old["expires_at"] is not None
    assert (await api.client.get("/v1/affiliates", headers=bearer(admin))).status_code == 200


async def test_revoke_takes_effect_on_the_next_request(api: Api) -> None:
    org = api.org()
    admin, victim = await api.key(org), await api.key(org)
    revoked = await api.client.post(
        f"/v1/api-keys/key_{victim.key.id.hex}/revoke",
        json={"reason": "leaked in a gist"},
        headers=bearer(admin),
    )
    assert revoked.json()["status"] == "revoked"
    response = await api.client.get("/v1/affiliates", headers=bearer(victim))
    assert_error(response, 401, "api_key_revoked")


async def test_revoking_twice_is_a_conflict_with_its_code(api: Api) -> None:
    org = api.org()
    admin, victim = await api.key(org), await api.key(org)
    path = f"/v1/api-keys/key_{victim.key.id.hex}/revoke"
    await api.client.post(path, headers=bearer(admin))
    assert_error(await api.client.post(path, headers=bearer(admin)), 409, "api_key_revoked")


async def test_another_organizations_key_is_not_found(api: Api) -> None:
    mine, theirs = await api.key(api.org()), await api.key(api.org())
    for method, suffix in (("GET", ""), ("POST", "/revoke"), ("POST", "/roll"), ("PATCH", "")):
        response = await api.client.request(
            method,
            f"/v1/api-keys/key_{theirs.key.id.hex}{suffix}",
            json={"name": "mine now"} if method == "PATCH" else None,
            headers=bearer(mine),
        )
        assert_error(response, 404, "not_found")


async def test_rename_changes_the_name(api: Api) -> None:
    admin = await api.key(api.org())
    response = await api.client.patch(
        f"/v1/api-keys/key_{admin.key.id.hex}", json={"name": "Billing"}, headers=bearer(admin)
    )
    assert response.json()["name"] == "Billing"


async def test_a_malformed_key_id_is_not_found(api: Api) -> None:
    admin = await api.key(api.org())
    assert_error(await api.client.get("/v1/api-keys/nope", headers=bearer(admin)), 404, "not_found")


async def test_the_openapi_schema_declares_the_bearer_scheme(api: Api) -> None:
    schema = (await api.client.get("/schema/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    assert "/v1/api-keys/{key_id}/roll" in schema["paths"]


async def test_keys_list_from_the_caught_up_listing_as_the_policy_allows(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = api.org()
    admin = await api.key(org)
    tester = await api.key(org, Environment.TEST)
    reader = await api.key(org, permissions={Permission.API_KEYS_READ})
    await api.key(api.org())  # another organization's
    KeyLookupUpdater.from_view(api.registry, api.process.services.key_lookup).catch_up_fully()
    loads: list[object] = []
    get_key = api.registry.get_key
    monkeypatch.setattr(
        api.registry, "get_key", lambda key_id: loads.append(key_id) or get_key(key_id)
    )

    live = await api.client.get("/v1/api-keys", headers=bearer(reader))
    test = await api.client.get("/v1/api-keys", headers=bearer(tester))
    # A live key sees both environments of its organization, a test key its own only.
    assert [k["id"] for k in live.json()["data"]] == [
        f"key_{admin.key.id.hex}",
        f"key_{tester.key.id.hex}",
        f"key_{reader.key.id.hex}",
    ]
    assert [k["id"] for k in test.json()["data"]] == [f"key_{tester.key.id.hex}"]
    assert live.json()["data"][2]["restricted"] is True
    assert loads == []  # every key came from the listing


async def _all_pages(api: Api, issued: object, **params: str) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        query = {"limit": "2", **params, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/api-keys", params=query, headers=bearer(issued))).json()
        pages.append([key["name"] for key in page["data"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


async def test_the_keys_page_by_cursor_oldest_first(api: Api) -> None:
    org = api.org()
    issued = await api.key(org)
    for name in ("b", "c", "d", "e"):
        await api.client.post("/v1/api-keys", json={"name": name}, headers=bearer(issued))
    assert await _all_pages(api, issued) == [["test key", "b"], ["c", "d"], ["e"]]


async def test_the_keys_of_a_past_instant_page_by_cursor_too(api: Api) -> None:
    org = api.org()
    issued = await api.key(org)
    for name in ("b", "c"):
        await api.client.post("/v1/api-keys", json={"name": name}, headers=bearer(issued))
    now = datetime.now(UTC).isoformat()
    await api.client.post("/v1/api-keys", json={"name": "later"}, headers=bearer(issued))
    assert await _all_pages(api, issued, as_of=now) == [["test key", "b"], ["c"]]


@pytest.mark.parametrize("cursor", ["nonsense", "YToxMjM", "WyJhazEiLCJrZXlfMDAiXQ"])
async def test_a_foreign_or_damaged_keys_cursor_is_422(api: Api, cursor: str) -> None:
    issued = await api.key(api.org())
    response = await api.client.get(
        "/v1/api-keys", params={"cursor": cursor}, headers=bearer(issued)
    )
    assert_error(response, 422, "validation_error")


async def test_a_cursor_naming_another_organizations_key_is_422(api: Api) -> None:
    mine, theirs = await api.key(api.org()), await api.key(api.org())
    await api.client.post("/v1/api-keys", json={"name": "x"}, headers=bearer(theirs))
    page = (
        await api.client.get("/v1/api-keys", params={"limit": "1"}, headers=bearer(theirs))
    ).json()
    response = await api.client.get(
        "/v1/api-keys", params={"cursor": page["next_cursor"]}, headers=bearer(mine)
    )
    assert_error(response, 422, "validation_error")
