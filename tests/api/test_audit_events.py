"""The auditor's API: the org's lifecycle feed, a key's history, and the keys as of an instant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from adapters.settings import Settings
from bootstrap.api import api_process
from domain.actors import OPERATOR, by_key
from domain.key_format import hash_key
from domain.plans import Plan
from support.api import Api, assert_error, bearer, serving

US = timedelta(microseconds=1)


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[Api]:
    process = api_process(api_settings, trusted_proxies=["10.0.0.0/8"])
    async with serving(process) as api:
        yield api


def _z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def _history_of(api: Api, admin: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """A key created, renamed, rolled and revoked through the API; returns its id and history."""
    created = await api.client.post("/v1/api-keys", json={"name": "Backend"}, headers=bearer(admin))
    assert created.status_code == 201, created.text
    key = created.json()
    renamed = await api.client.patch(
        f"/v1/api-keys/{key['id']}", json={"name": "Billing"}, headers=bearer(admin)
    )
    assert renamed.status_code == 200, renamed.text
    rolled = await api.client.post(
        f"/v1/api-keys/{key['id']}/roll", json={"expire_in_seconds": 3600}, headers=bearer(admin)
    )
    assert rolled.status_code == 200, rolled.text
    revoked = await api.client.post(
        f"/v1/api-keys/{key['id']}/revoke", json={"reason": "rotated"}, headers=bearer(admin)
    )
    assert revoked.status_code == 200, revoked.text
    response = await api.client.get(f"/v1/api-keys/{key['id']}/history", headers=bearer(admin))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    return key["id"], body["data"], {"key": key, "successor": rolled.json()}


async def test_key_history_shows_who_changed_the_key_when_and_what(api: Api) -> None:
    org = api.org(Plan.PRO)
    admin = await api.key(org)
    key_id, history, made = await _history_of(api, admin)

    assert [e["type"] for e in history] == [
        "api_key.created",
        "api_key.renamed",
        "api_key.rolled",
        "api_key.revoked",
    ]
    assert {e["actor"] for e in history} == {by_key(admin.key.id)}
    times = [datetime.fromisoformat(e["occurred_at"]) for e in history]
    assert times == sorted(times)
    assert history[1]["changes"] == {"name": {"from": "Backend", "to": "Billing"}}
    assert history[2]["data"]["successor_id"] == made["successor"]["id"]
    assert history[3]["data"] == {"reason": "rotated"}
    assert history[3]["changes"]["status"]["to"] == "revoked"
    assert all(e["aggregate_id"] == key_id for e in history)

    text = str(history)
    for secret in (made["key"]["key"], made["successor"]["key"]):
        assert secret not in text
        assert hash_key(secret, api.process.services.settings.key_pepper) not in text


async def test_the_event_feed_is_replayable_and_paginated_by_position(api: Api) -> None:
    org = api.org(Plan.PRO)
    auditor = await api.key(org)
    await _history_of(api, auditor)
    api.registry.change_plan(org.id, Plan.AGENCY, OPERATOR)

    first = await api.client.get("/v1/audit/events?after=0&limit=1000", headers=bearer(auditor))
    again = await api.client.get("/v1/audit/events?after=0&limit=1000", headers=bearer(auditor))
    assert first.status_code == 200, first.text
    assert first.json() == again.json()
    everything = first.json()["data"]
    assert first.json()["next_cursor"] is None
    assert everything[0]["type"] == "organization.registered"
    assert everything[-1]["type"] == "organization.plan_changed"
    positions = [e["position"] for e in everything]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)

    paged: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await api.client.get(
            f"/v1/audit/events?after={after}&limit=3", headers=bearer(auditor)
        )
        replay = await api.client.get(
            f"/v1/audit/events?after={after}&limit=3", headers=bearer(auditor)
        )
        assert page.json() == replay.json()
        body = page.json()
        paged.extend(body["data"])
        if body["next_cursor"] is None:
            break
        assert body["next_cursor"] == body["data"][-1]["position"]
        after = body["next_cursor"]
    assert paged == everything


async def test_the_feed_needs_audit_read_and_valid_parameters(api: Api) -> None:
    free = await api.key(api.org(Plan.FREE))
    assert_error(
        await api.client.get("/v1/audit/events", headers=bearer(free)),
        403,
        "insufficient_permissions",
    )
    auditor = await api.key(api.org(Plan.PRO))
    for query in ("after=-1", "after=abc", "limit=0", "limit=100000"):
        assert_error(
            await api.client.get(f"/v1/audit/events?{query}", headers=bearer(auditor)),
            422,
            "validation_error",
        )
    assert_error(await api.client.get("/v1/audit/events"), 401, "missing_api_key")


async def test_an_auditor_of_one_org_never_sees_another_orgs_events_or_keys(api: Api) -> None:
    a, b = api.org(Plan.PRO), api.org(Plan.PRO)
    auditor_a, admin_b = await api.key(a), await api.key(b)
    b_key_id, _, _ = await _history_of(api, admin_b)

    feed = (await api.client.get("/v1/audit/events?limit=1000", headers=bearer(auditor_a))).json()
    assert feed["data"] and {e["org_id"] for e in feed["data"]} == {f"org_{a.id.hex}"}
    assert b_key_id not in str(feed)

    assert_error(
        await api.client.get(f"/v1/api-keys/{b_key_id}/history", headers=bearer(auditor_a)),
        404,
        "not_found",
    )
    assert_error(
        await api.client.get("/v1/api-keys/key_nonsense/history", headers=bearer(auditor_a)),
        404,
        "not_found",
    )
    now = _z(datetime.now().astimezone())
    past = (
        await api.client.get(f"/v1/api-keys?as_of={quote(now)}", headers=bearer(auditor_a))
    ).json()
    assert [k["id"] for k in past["data"]] == [f"key_{auditor_a.key.id.hex}"]


async def test_keys_as_of_answers_for_a_key_created_rolled_and_revoked(api: Api) -> None:
    org = api.org(Plan.PRO)
    admin = await api.key(org)
    key_id, history, made = await _history_of(api, admin)
    created, _, rolled, revoked = (datetime.fromisoformat(e["occurred_at"]) for e in history)
    successor_id = made["successor"]["id"]

    async def as_of(moment: datetime) -> dict[str, dict[str, Any]]:
        response = await api.client.get(
            "/v1/api-keys", params={"as_of": _z(moment)}, headers=bearer(admin)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["as_of"] == _z(moment)
        return {k["id"]: k for k in body["data"]}

    assert key_id not in await as_of(created - US)
    assert (await as_of(created))[key_id]["status"] == "active"
    after_roll = await as_of(rolled)
    assert after_roll[key_id]["status"] == "expiring"
    assert after_roll[key_id]["rolled_to"] == successor_id
    assert after_roll[successor_id]["status"] == "active"
    assert (await as_of(revoked - US))[key_id]["status"] == "expiring"
    after_revoke = await as_of(revoked)
    assert after_revoke[key_id]["status"] == "revoked"
    assert "key" not in after_revoke[successor_id]

    # An offset written with `+` but not URL-encoded arrives as a space: still understood.
    plus = rolled.astimezone().isoformat()
    raw = await api.client.get(f"/v1/api-keys?as_of={plus}", headers=bearer(admin))
    assert raw.status_code == 200, raw.text
    assert {k["id"]: k["status"] for k in raw.json()["data"]}[key_id] == "expiring"


async def test_an_invalid_as_of_is_a_validation_error(api: Api) -> None:
    admin = await api.key(api.org(Plan.PRO))
    for value in ("yesterday", "2026-03-01", "2026-03-01T12:00:00", "2999-01-01T00:00:00Z"):
        assert_error(
            await api.client.get("/v1/api-keys", params={"as_of": value}, headers=bearer(admin)),
            422,
            "validation_error",
        )
