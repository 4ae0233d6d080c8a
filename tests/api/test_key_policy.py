"""`/v1/organization/policy` and the key routes under it: an org's lifetime policy is read and
changed by its keys; keys that break it are refused with `policy_violation` naming the rule; a
roll can revoke the old key once idle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from application.key_lifetimes import KeyLifetimes
from application.registry import IssuedKey
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.lifetime_policy import ExpiryRequirement, LifetimePolicy
from domain.plans import Permission
from support.api import Api, assert_error, bearer

DAY = 86400


def later(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def test_a_new_org_has_no_policy(api: Api) -> None:
    org = api.org()
    response = await api.client.get("/v1/organization/policy", headers=bearer(await api.key(org)))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "object": "key_policy",
        "org_id": response.json()["org_id"],
        "max_lifetime_seconds": None,
        "require_expiry": "none",
        "revoke_unused_after_seconds": None,
        "unused_warning_seconds": 7 * DAY,
    }


async def test_a_patch_changes_the_rules_it_sends_and_keeps_the_others(api: Api) -> None:
    headers = bearer(await api.key(api.org()))
    first = await api.client.patch(
        "/v1/organization/policy",
        json={"max_lifetime_seconds": 90 * DAY, "require_expiry": "live"},
        headers=headers,
    )
    assert first.status_code == 200, first.text
    second = await api.client.patch(
        "/v1/organization/policy",
        json={"revoke_unused_after_seconds": 30 * DAY, "max_lifetime_seconds": None},
        headers=headers,
    )
    assert second.status_code == 200, second.text
    read = (await api.client.get("/v1/organization/policy", headers=headers)).json()
    assert read == second.json()
    assert read["max_lifetime_seconds"] is None
    assert read["require_expiry"] == "live"
    assert read["revoke_unused_after_seconds"] == 30 * DAY


async def test_a_rule_out_of_bounds_is_refused_and_changes_nothing(api: Api) -> None:
    org = api.org()
    headers = bearer(await api.key(org))
    response = await api.client.patch(
        "/v1/organization/policy", json={"revoke_unused_after_seconds": 3600}, headers=headers
    )
    assert_error(response, 422, "validation_error")
    assert "revoke_unused_after" in response.json()["error"]["message"]
    assert api.registry.get_organization(org.id).lifetime_policy == LifetimePolicy()


async def test_an_unknown_rule_is_refused(api: Api) -> None:
    response = await api.client.patch(
        "/v1/organization/policy",
        json={"max_lifetime_days": 90},
        headers=bearer(await api.key(api.org())),
    )
    assert_error(response, 422, "validation_error")


async def test_a_test_key_cannot_change_the_policy_but_reads_it(api: Api) -> None:
    headers = bearer(await api.key(api.org(), Environment.TEST))
    refused = await api.client.patch(
        "/v1/organization/policy", json={"require_expiry": "none"}, headers=headers
    )
    assert_error(refused, 403, "insufficient_permissions")
    assert (await api.client.get("/v1/organization/policy", headers=headers)).status_code == 200


async def test_a_restricted_key_cannot_change_the_policy_though_it_may_write_keys(
    api: Api,
) -> None:
    org = api.org()
    writer = await api.key(org, permissions={Permission.API_KEYS_WRITE})
    response = await api.client.patch(
        "/v1/organization/policy",
        json={"revoke_unused_after_seconds": DAY},
        headers=bearer(writer),
    )
    assert_error(response, 403, "insufficient_permissions")
    assert api.registry.get_organization(org.id).lifetime_policy == LifetimePolicy()


async def test_an_expiring_key_cannot_change_the_policy(api: Api) -> None:
    org = api.org()
    expiring = api.registry.create_key(
        org.id,
        name="short-lived",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    await api.process.services.mirror.refresh()
    response = await api.client.patch(
        "/v1/organization/policy", json={"require_expiry": "none"}, headers=bearer(expiring)
    )
    assert_error(response, 403, "insufficient_permissions")


async def test_a_key_without_api_keys_write_cannot_change_the_policy(api: Api) -> None:
    reader = await api.key(api.org(), permissions={Permission.API_KEYS_READ})
    response = await api.client.patch(
        "/v1/organization/policy", json={"require_expiry": "all"}, headers=bearer(reader)
    )
    assert_error(response, 403, "insufficient_permissions")


async def a_key_under(api: Api, **rules: Any) -> IssuedKey:
    """A key of a new org, issued before the org set this policy."""
    org = api.org()
    issued = await api.key(org)
    KeyLifetimes(api.registry).set_policy(OPERATOR, org.id, LifetimePolicy(**rules))
    return issued


async def test_creating_a_key_that_never_expires_under_a_max_lifetime_is_refused(
    api: Api,
) -> None:
    issued = await a_key_under(api, max_lifetime=timedelta(days=90))
    org_id = issued.key.org_id
    response = await api.client.post(
        "/v1/api-keys", json={"name": "forever"}, headers=bearer(issued)
    )
    body = assert_error(response, 422, "policy_violation")
    assert body["error"]["rule"] == "max_lifetime"
    assert "90 days" in body["error"]["message"]
    assert len(api.registry.get_organization(org_id).key_ids) == 1


async def test_creating_a_key_within_the_policy_succeeds(api: Api) -> None:
    issued = await a_key_under(api, max_lifetime=timedelta(days=90))
    response = await api.client.post(
        "/v1/api-keys",
        json={"name": "quarterly", "expires_at": later(30)},
        headers=bearer(issued),
    )
    assert response.status_code == 201, response.text


async def test_a_live_key_needs_an_expiry_where_the_policy_requires_one(api: Api) -> None:
    headers = bearer(await a_key_under(api, require_expiry=ExpiryRequirement.LIVE))
    refused = await api.client.post("/v1/api-keys", json={"name": "k"}, headers=headers)
    assert assert_error(refused, 422, "policy_violation")["error"]["rule"] == "require_expiry"
    test_key = await api.client.post(
        "/v1/api-keys", json={"name": "k", "env": "test"}, headers=headers
    )
    assert test_key.status_code == 201, test_key.text


async def test_rolling_a_key_that_breaks_the_policy_is_refused_until_given_an_expiry(
    api: Api,
) -> None:
    issued = await a_key_under(api, max_lifetime=timedelta(days=90))
    key_id = issued.key.id.hex
    path = f"/v1/api-keys/key_{key_id}/roll"
    refused = await api.client.post(path, json={}, headers=bearer(issued))
    assert assert_error(refused, 422, "policy_violation")["error"]["rule"] == "max_lifetime"
    assert api.registry.get_key(issued.key.id).successor_id is None

    rolled = await api.client.post(path, json={"expires_at": later(60)}, headers=bearer(issued))
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["expires_at"] is not None


async def test_a_roll_can_revoke_the_old_key_once_idle(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.post(
        f"/v1/api-keys/key_{issued.key.id.hex}/roll",
        json={"expire_in_seconds": 3600, "revoke_when_idle_minutes": 15},
        headers=bearer(issued),
    )
    assert response.status_code == 200, response.text
    old = await api.client.get(
        f"/v1/api-keys/key_{issued.key.id.hex}",
        headers=bearer(response.json()["key"]),
    )
    assert old.json()["status"] == "expiring"
    assert old.json()["revoke_when_idle_seconds"] == 15 * 60


async def test_an_idle_time_beyond_the_grace_is_refused(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.post(
        f"/v1/api-keys/key_{issued.key.id.hex}/roll",
        json={"expire_in_seconds": 600, "revoke_when_idle_minutes": 15},
        headers=bearer(issued),
    )
    assert_error(response, 422, "validation_error")
    assert api.registry.get_key(issued.key.id).successor_id is None


async def test_the_schema_documents_the_policy_and_its_violation(api: Api) -> None:
    schema = (await api.client.get("/schema/openapi.json")).json()
    policy = schema["paths"]["/v1/organization/policy"]
    assert {"get", "patch"} <= set(policy)
    roll = schema["paths"]["/v1/api-keys/{key_id}/roll"]["post"]
    assert "policy_violation" in roll["responses"]["422"]["description"]
    error = schema["components"]["schemas"]["Error"]["properties"]["error"]
    assert "rule" in error["properties"]
