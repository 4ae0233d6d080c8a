"""No key obtains more than it has: test keys stay in test mode, restricted keys in their limits.

Each test is an attack that worked before the one access policy (issue 10): a test key rolling
a live key into a working live secret, a restricted key rolling an unrestricted one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.actors import OPERATOR
from domain.ids import parse_key_id
from domain.key_format import Environment, KeyType
from domain.organization import LeakPolicy
from domain.plans import PLAN_PERMISSIONS, Permission, Plan
from domain.roles import Role
from support.actors import user_of
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
    assert "permissions it lacks itself" in body["error"]["message"]
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

    other = await api.client.post(
        f"/v1/api-keys/key_{narrower.key.id.hex}/roll", json={}, headers=bearer(limited)
    )
    itself = await api.client.post(
        f"/v1/api-keys/key_{limited.key.id.hex}/roll", json={}, headers=bearer(limited)
    )

    assert itself.status_code == 200, itself.text
    assert other.status_code == 200, other.text
    assert other.json()["permissions"] == ["api_keys:read"]


async def test_a_key_a_developer_made_cannot_roll_an_owners_key(api: Api) -> None:
    org = api.org()
    owners = await api.key(org)
    made = api.registry.create_key(
        org.id,
        name="developer's",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=user_of(org, Role.DEVELOPER),
    )
    await api.process.services.mirror.refresh()

    rolled = await api.client.post(
        f"/v1/api-keys/key_{owners.key.id.hex}/roll",
        json={"expire_in_seconds": 0},
        headers=bearer(made),
    )

    assert "api_keys:write" not in made.key.effective_permissions(org)
    assert_error(rolled, 403, "insufficient_permissions")
    assert api.registry.get_key(owners.key.id).successor_id is None


async def test_a_rolled_key_in_its_grace_can_no_longer_mint_or_roll_keys(api: Api) -> None:
    org = api.org()
    old = await api.key(org)
    new = api.registry.roll_key(old.key.id, grace=timedelta(hours=1), actor=OPERATOR)
    await api.process.services.mirror.refresh()

    minted = await api.client.post("/v1/api-keys", json={"name": "x"}, headers=bearer(old))
    stolen = await api.client.post(
        f"/v1/api-keys/key_{new.key.id.hex}/roll", json={}, headers=bearer(old)
    )
    still = await api.client.get("/v1/affiliates", headers=bearer(old))
    itself = await api.client.post(
        f"/v1/api-keys/key_{old.key.id.hex}/revoke", json={}, headers=bearer(old)
    )

    assert_error(minted, 403, "insufficient_permissions")
    assert_error(stolen, 403, "insufficient_permissions")
    assert api.registry.get_key(new.key.id).successor_id is None
    assert still.status_code == 200  # it keeps serving its grace period
    assert itself.status_code == 200, itself.text  # and may end it


async def test_a_key_flagged_as_leaked_cannot_mint_a_replacement_for_its_finder(api: Api) -> None:
    org = api.org()
    api.registry.set_leak_policy(org.id, LeakPolicy.ROLL, OPERATOR)
    leaked = await api.key(org)
    assert api.registry.respond_to_leak(leaked.key.id, url="https://gist.example/1", source="x")
    await api.process.services.mirror.refresh()

    minted = await api.client.post("/v1/api-keys", json={"name": "mine"}, headers=bearer(leaked))

    assert_error(minted, 403, "insufficient_permissions")


async def test_a_key_limited_to_a_network_cannot_make_or_become_a_key_usable_anywhere(
    api: Api,
) -> None:
    org = api.org()
    fenced = api.registry.create_key(
        org.id,
        name="office",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
        allowed_ips=("127.0.0.0/8",),  # where the test client calls from
    )
    await api.process.services.mirror.refresh()

    inherited = await api.client.post("/v1/api-keys", json={"name": "c"}, headers=bearer(fenced))
    anywhere = await api.client.post(
        "/v1/api-keys", json={"name": "c", "allowed_ips": ["0.0.0.0/0"]}, headers=bearer(fenced)
    )
    lifted = await api.client.patch(
        f"/v1/api-keys/key_{fenced.key.id.hex}", json={"allowed_ips": []}, headers=bearer(fenced)
    )

    assert inherited.status_code == 201, inherited.text
    assert inherited.json()["allowed_ips"] == ["127.0.0.0/8"]
    assert_error(anywhere, 403, "insufficient_permissions")
    assert_error(lifted, 403, "insufficient_permissions")
    assert api.registry.get_key(fenced.key.id).allowed_ips == ["127.0.0.0/8"]


async def test_an_expiring_key_cannot_make_a_key_that_outlives_it(api: Api) -> None:
    org = api.org()
    ends = datetime.now(UTC) + timedelta(hours=1)
    expiring = api.registry.create_key(
        org.id,
        name="temp",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
        expires_at=ends,
    )
    await api.process.services.mirror.refresh()

    inherited = await api.client.post("/v1/api-keys", json={"name": "c"}, headers=bearer(expiring))
    later = await api.client.post(
        "/v1/api-keys",
        json={"name": "c", "expires_at": (ends + timedelta(days=1)).isoformat()},
        headers=bearer(expiring),
    )

    assert inherited.status_code == 201, inherited.text
    assert datetime.fromisoformat(inherited.json()["expires_at"]) <= ends
    assert_error(later, 403, "insufficient_permissions")


async def test_a_key_restricted_to_its_plan_passes_its_restriction_on_through_an_upgrade(
    api: Api,
) -> None:
    org = api.org(Plan.FREE)
    limited = await api.key(org, permissions=set(PLAN_PERMISSIONS[Plan.FREE]))
    child = await api.client.post("/v1/api-keys", json={"name": "c"}, headers=bearer(limited))
    api.registry.change_plan(org.id, Plan.PRO, OPERATOR)

    assert child.status_code == 201, child.text
    after = api.registry.get_key(parse_key_id(child.json()["id"]))
    assert "audit:read" not in after.effective_permissions(api.registry.get_organization(org.id))


async def test_a_key_revoked_a_moment_ago_cannot_still_mint_keys(api: Api) -> None:
    org = api.org()
    issued = await api.key(org)
    api.registry.revoke_key(issued.key.id, actor=OPERATOR)  # this process's mirror not told yet

    minted = await api.client.post("/v1/api-keys", json={"name": "x"}, headers=bearer(issued))

    assert minted.status_code in (401, 403), minted.text
    assert len(api.registry.list_keys(org.id)) == 1


async def test_a_rename_with_a_bad_allowlist_changes_nothing(api: Api) -> None:
    org = api.org()
    issued = await api.key(org)

    response = await api.client.patch(
        f"/v1/api-keys/key_{issued.key.id.hex}",
        json={"name": "renamed", "allowed_ips": ["not-a-network"]},
        headers=bearer(issued),
    )

    assert_error(response, 422, "validation_error")
    assert api.registry.get_key(issued.key.id).name == "test key"
