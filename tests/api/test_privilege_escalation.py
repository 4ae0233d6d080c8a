"""No key obtains more than it has: test keys stay in test mode, restricted keys in their limits.

Each test is an attack that worked before the one access policy (issue 10): a test key rolling
a live key into a working live secret, a restricted key rolling an unrestricted one.
"""

from __future__ import annotations

from domain.key_format import Environment
from domain.plans import Permission
from support.api import Api, assert_error, bearer


async def test_a_test_key_cannot_roll_a_live_key_into_a_live_secret(api: Api) -> None:
    org = api.org()
    live, test = await api.key(org), await api.key(org, Environment.TEST)

    rolled = await api.client.post(
        f"/v1/api-keys/key_{live.key.id.hex}/roll",
        json={"expire_in_seconds": 0},
        headers=bearer(test),
    )

    assert_error(rolled, 404, "not_found")
    assert "ak_live_" not in rolled.text
    assert api.registry.get_key(live.key.id).successor_id is None
    still = await api.client.get("/v1/affiliates", headers=bearer(live))
    assert still.status_code == 200


async def test_a_test_key_cannot_rename_revoke_or_fence_a_live_key(api: Api) -> None:
    org = api.org()
    live, test = await api.key(org), await api.key(org, Environment.TEST)
    path = f"/v1/api-keys/key_{live.key.id.hex}"

    renamed = await api.client.patch(path, json={"name": "mine now"}, headers=bearer(test))
    fenced = await api.client.patch(path, json={"allowed_ips": ["192.0.2.1"]}, headers=bearer(test))
    revoked = await api.client.post(f"{path}/revoke", json={}, headers=bearer(test))

    for response in (renamed, fenced, revoked):
        assert_error(response, 404, "not_found")
    key = api.registry.get_key(live.key.id)
    assert (key.name, key.allowed_ips, key.is_revoked) == ("test key", [], False)


async def test_a_test_key_sees_no_live_key_nor_its_history_nor_its_events(api: Api) -> None:
    org = api.org()
    live, test = await api.key(org), await api.key(org, Environment.TEST)
    live_id = f"key_{live.key.id.hex}"

    listing = await api.client.get("/v1/api-keys", headers=bearer(test))
    one = await api.client.get(f"/v1/api-keys/{live_id}", headers=bearer(test))
    history = await api.client.get(f"/v1/api-keys/{live_id}/history", headers=bearer(test))
    feed = await api.client.get("/v1/audit/events", headers=bearer(test))

    assert [k["env"] for k in listing.json()["data"]] == ["test"]
    assert_error(one, 404, "not_found")
    assert_error(history, 404, "not_found")
    assert feed.status_code == 200, feed.text
    assert live_id not in feed.text
    assert f"key_{test.key.id.hex}" in feed.text


async def test_a_live_key_still_sees_and_manages_test_keys(api: Api) -> None:
    org = api.org()
    live, test = await api.key(org), await api.key(org, Environment.TEST)

    listing = await api.client.get("/v1/api-keys", headers=bearer(live))
    rolled = await api.client.post(
        f"/v1/api-keys/key_{test.key.id.hex}/roll", json={}, headers=bearer(live)
    )

    assert sorted(k["env"] for k in listing.json()["data"]) == ["live", "test"]
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["key"].startswith("ak_test_")


async def test_a_restricted_key_cannot_roll_an_unrestricted_key(api: Api) -> None:
    org = api.org()
    admin = await api.key(org)
    limited = await api.key(org, permissions={Permission.API_KEYS_WRITE})

    rolled = await api.client.post(
        f"/v1/api-keys/key_{admin.key.id.hex}/roll", json={}, headers=bearer(limited)
    )

    body = assert_error(rolled, 403, "insufficient_permissions")
    assert "audit:read" in body["error"]["message"]
    assert api.registry.get_key(admin.key.id).successor_id is None


async def test_a_restricted_key_cannot_revoke_or_rename_a_broader_key(api: Api) -> None:
    org = api.org()
    admin = await api.key(org)
    limited = await api.key(org, permissions={Permission.API_KEYS_WRITE})
    path = f"/v1/api-keys/key_{admin.key.id.hex}"

    revoked = await api.client.post(f"{path}/revoke", json={}, headers=bearer(limited))
    renamed = await api.client.patch(path, json={"name": "x"}, headers=bearer(limited))

    assert_error(revoked, 403, "insufficient_permissions")
    assert_error(renamed, 403, "insufficient_permissions")
    assert not api.registry.get_key(admin.key.id).is_revoked


async def test_a_restricted_key_rolls_itself_and_keys_within_its_permissions(api: Api) -> None:
    org = api.org()
    limited = await api.key(org, permissions={Permission.API_KEYS_WRITE, Permission.API_KEYS_READ})
    narrower = await api.key(org, permissions={Permission.API_KEYS_READ})

    itself = await api.client.post(
        f"/v1/api-keys/key_{limited.key.id.hex}/roll", json={}, headers=bearer(limited)
    )
    other = await api.client.post(
        f"/v1/api-keys/key_{narrower.key.id.hex}/roll", json={}, headers=bearer(limited)
    )

    assert itself.status_code == 200, itself.text
    assert other.status_code == 200, other.text
    assert other.json()["permissions"] == ["api_keys:read"]
