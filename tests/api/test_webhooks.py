"""`/v1/webhooks`: endpoints are added with a secret shown once, read, changed, rotated and
deleted within the key's organization and environment; URLs that could reach internal networks
and keys that may not manage webhooks are refused with stable codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.key_events import to_message
from domain.actors import OPERATOR
from domain.ids import parse_webhook_id
from domain.key_format import Environment
from domain.plans import Permission, Plan
from support.api import Api, assert_error, bearer
from support.webhook_api import (
    PUBLIC_URL,
    WEBHOOK_MANAGER,
    add_webhook,
    headers_for,
    resolve_fakely,
)


@pytest.fixture(autouse=True)
async def fake_dns(api: Api) -> AsyncIterator[None]:
    resolve_fakely(api)
    yield


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stored_types(api: Api, webhook_id: str) -> list[str]:
    """The wire types of the endpoint's stored events, oldest first."""
    registry = api.registry
    stored = registry.recorder.select_events(parse_webhook_id(webhook_id))
    return [to_message(0, registry.mapper.to_domain_event(s)).type for s in stored]


# -- adding, reading, changing, deleting --------------------------------------------------------


async def test_adding_an_endpoint_answers_201_with_its_secret_shown_once(api: Api) -> None:
    headers = await headers_for(api, api.org())
    response = await api.client.post(
        "/v1/webhooks",
        json={"url": PUBLIC_URL, "events": ["api_key.revoked"], "description": "Ops"},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    assert created["object"] == "webhook_endpoint"
    assert created["id"].startswith("we_")
    assert created["secret"].startswith("whsec_")
    assert created["env"] == "live"
    assert created["url"] == PUBLIC_URL
    assert created["events"] == ["api_key.revoked"]
    assert created["description"] == "Ops"
    assert created["status"] == "enabled"
    assert created["previous_secret_expires_at"] is None

    one = await api.client.get(f"/v1/webhooks/{created['id']}", headers=headers)
    listed = await api.client.get("/v1/webhooks", headers=headers)
    assert one.status_code == listed.status_code == 200
    assert "secret" not in one.json()
    assert listed.json()["object"] == "list"
    assert listed.json()["next_cursor"] is None
    assert [w["id"] for w in listed.json()["data"]] == [created["id"]]
    for answer in (one, listed):
        assert created["secret"] not in answer.text


async def test_an_endpoint_is_changed_disabled_enabled_and_deleted(api: Api) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    path = f"/v1/webhooks/{webhook['id']}"

    changed = await api.client.patch(
        path,
        json={
            "url": "https://other.example.com/in",
            "events": ["rate_limit.exceeded", "api_key.exposed"],
            "description": "  renamed  ",
        },
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["url"] == "https://other.example.com/in"
    assert changed.json()["events"] == ["api_key.exposed", "rate_limit.exceeded"]
    assert changed.json()["description"] == "renamed"
    assert "secret" not in changed.json()

    disabled = await api.client.patch(path, json={"enabled": False}, headers=headers)
    assert disabled.json()["status"] == "disabled"
    assert disabled.json()["disabled_reason"]
    enabled = await api.client.patch(path, json={"enabled": True}, headers=headers)
    assert enabled.json()["status"] == "enabled"

    deleted = await api.client.delete(path, headers=headers)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] is True
    assert deleted.json()["id"] == webhook["id"]
    assert_error(await api.client.get(path, headers=headers), 404, "not_found")
    assert_error(await api.client.delete(path, headers=headers), 404, "not_found")
    listed = await api.client.get("/v1/webhooks", headers=headers)
    assert listed.json()["data"] == []
    assert stored_types(api, webhook["id"])[-1] == "webhook.deleted"


async def test_a_change_with_nothing_in_it_is_422(api: Api) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    response = await api.client.patch(f"/v1/webhooks/{webhook['id']}", json={}, headers=headers)
    assert_error(response, 422, "validation_error")


async def test_rotating_gives_a_new_secret_and_the_old_one_signs_for_24_hours(api: Api) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    response = await api.client.post(f"/v1/webhooks/{webhook['id']}/rotate-secret", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    rotated = response.json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != webhook["secret"]
    overlap = moment(rotated["previous_secret_expires_at"]) - datetime.now(UTC)
    assert timedelta(hours=23, minutes=59) < overlap <= timedelta(hours=24)
    again = await api.client.get(f"/v1/webhooks/{webhook['id']}", headers=headers)
    assert again.json()["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]
    assert rotated["secret"] not in again.text


async def test_a_test_request_is_accepted_and_stored_for_the_worker(api: Api) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    response = await api.client.post(f"/v1/webhooks/{webhook['id']}/test", headers=headers)
    assert response.status_code == 202, response.text
    assert response.json() == {
        "object": "webhook_test",
        "webhook_id": webhook["id"],
        "status": "requested",
    }
    assert stored_types(api, webhook["id"])[-1] == "webhook.test_requested"


# -- environments, organizations, permissions ---------------------------------------------------


async def test_a_test_key_adds_test_endpoints_and_cannot_see_live_ones(api: Api) -> None:
    org = api.org()
    live = await headers_for(api, org)
    test = await headers_for(api, org, Environment.TEST)
    live_webhook = await add_webhook(api, live)
    test_webhook = await add_webhook(api, test)
    assert test_webhook["env"] == "test"

    refused = await api.client.post(
        "/v1/webhooks",
        json={"url": PUBLIC_URL, "events": ["api_key.created"], "env": "live"},
        headers=test,
    )
    assert_error(refused, 403, "insufficient_permissions")
    listed = await api.client.get("/v1/webhooks", headers=test)
    assert [w["id"] for w in listed.json()["data"]] == [test_webhook["id"]]
    path = f"/v1/webhooks/{live_webhook['id']}"
    assert_error(await api.client.get(path, headers=test), 404, "not_found")
    assert_error(
        await api.client.patch(path, json={"description": "x"}, headers=test), 404, "not_found"
    )
    assert_error(await api.client.post(f"{path}/rotate-secret", headers=test), 404, "not_found")
    # A live key sees both.
    listed = await api.client.get("/v1/webhooks", headers=live)
    assert {w["id"] for w in listed.json()["data"]} == {live_webhook["id"], test_webhook["id"]}


async def test_another_organizations_endpoint_does_not_exist(api: Api) -> None:
    theirs = await add_webhook(api, await headers_for(api, api.org()))
    mine = await headers_for(api, api.org())
    path = f"/v1/webhooks/{theirs['id']}"
    answers = [
        await api.client.get(path, headers=mine),
        await api.client.patch(path, json={"description": "x"}, headers=mine),
        await api.client.delete(path, headers=mine),
        await api.client.post(f"{path}/rotate-secret", headers=mine),
        await api.client.post(f"{path}/test", headers=mine),
        await api.client.get(f"{path}/deliveries", headers=mine),
    ]
    for answer in answers:
        assert_error(answer, 404, "not_found")
    assert stored_types(api, theirs["id"]) == ["webhook.created"]


@pytest.mark.parametrize("webhook_id", ["we_nothex", "we_" + "0" * 32, "key_" + "1" * 32])
async def test_a_malformed_or_unknown_id_is_404(api: Api, webhook_id: str) -> None:
    headers = await headers_for(api, api.org())
    assert_error(
        await api.client.get(f"/v1/webhooks/{webhook_id}", headers=headers), 404, "not_found"
    )


async def test_a_key_without_webhooks_write_reads_but_cannot_manage(api: Api) -> None:
    org = api.org()
    webhook = await add_webhook(api, await headers_for(api, org))
    reader = await headers_for(
        api, org, permissions={Permission.WEBHOOKS_READ, Permission.API_KEYS_READ}
    )
    path = f"/v1/webhooks/{webhook['id']}"
    assert (await api.client.get(path, headers=reader)).status_code == 200
    refusals = [
        await api.client.post(
            "/v1/webhooks", json={"url": PUBLIC_URL, "events": ["api_key.created"]}, headers=reader
        ),
        await api.client.patch(path, json={"description": "x"}, headers=reader),
        await api.client.delete(path, headers=reader),
        await api.client.post(f"{path}/rotate-secret", headers=reader),
        await api.client.post(f"{path}/test", headers=reader),
    ]
    for refusal in refusals:
        assert_error(refusal, 403, "insufficient_permissions")
    assert stored_types(api, webhook["id"]) == ["webhook.created"]


async def test_a_key_without_webhooks_read_cannot_list(api: Api) -> None:
    headers = await headers_for(api, api.org(), permissions={Permission.API_KEYS_READ})
    assert_error(
        await api.client.get("/v1/webhooks", headers=headers), 403, "insufficient_permissions"
    )


async def test_key_events_need_api_keys_read_to_subscribe(api: Api) -> None:
    org = api.org()
    writer = await headers_for(
        api, org, permissions={Permission.WEBHOOKS_READ, Permission.WEBHOOKS_WRITE}
    )
    refused = await api.client.post(
        "/v1/webhooks", json={"url": PUBLIC_URL, "events": ["api_key.created"]}, headers=writer
    )
    assert_error(refused, 403, "insufficient_permissions")
    # Only webhook.disabled carries no key object.
    allowed = await add_webhook(api, writer, events=["webhook.disabled"])
    widened = await api.client.patch(
        f"/v1/webhooks/{allowed['id']}",
        json={"events": ["webhook.disabled", "api_key.rolled"]},
        headers=writer,
    )
    assert_error(widened, 403, "insufficient_permissions")
    assert stored_types(api, allowed["id"]) == ["webhook.created"]


async def test_a_rolled_key_cannot_add_or_change_endpoints(api: Api) -> None:
    org = api.org()
    webhook = await add_webhook(api, await headers_for(api, org))
    issued = await api.key(org)
    api.registry.roll_key(issued.key.id, grace=timedelta(hours=1), actor=OPERATOR)
    await api.process.services.mirror.refresh()
    rolled = bearer(issued)
    refused = await api.client.post(
        "/v1/webhooks", json={"url": PUBLIC_URL, "events": ["api_key.created"]}, headers=rolled
    )
    assert_error(refused, 403, "insufficient_permissions")
    changed = await api.client.patch(
        f"/v1/webhooks/{webhook['id']}", json={"description": "x"}, headers=rolled
    )
    assert_error(changed, 403, "insufficient_permissions")
    assert (await api.client.get("/v1/webhooks", headers=rolled)).status_code == 200


async def test_every_plan_has_webhooks(api: Api) -> None:
    free = await headers_for(api, api.org(Plan.FREE))
    webhook = await add_webhook(api, free)
    assert webhook["secret"].startswith("whsec_")


# -- refused input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x",
        "https://169.254.169.254/latest",
        "http://example.com/hook",  # plain HTTP: only with allow-private (development)
        "https://[::ffff:127.0.0.1]/",
        "https://localhost/hook",
        "https://intranet.example.com/hook",  # a public name for a private address
        "https://rebind.example.com/hook",  # one of its addresses is loopback
        "https://metadata.example.com/latest",
        "https://nowhere.example.com/hook",  # does not resolve
        "https://user:pass@hooks.example.com/",
        "ftp://hooks.example.com/",
        "",
    ],
)
async def test_a_url_that_could_reach_internal_networks_is_422(api: Api, url: str) -> None:
    headers = await headers_for(api, api.org())
    response = await api.client.post(
        "/v1/webhooks", json={"url": url, "events": ["api_key.created"]}, headers=headers
    )
    assert_error(response, 422, "webhook_url_not_allowed")


async def test_changing_to_an_internal_url_is_422_and_changes_nothing(api: Api) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    response = await api.client.patch(
        f"/v1/webhooks/{webhook['id']}",
        json={"url": "https://169.254.169.254/latest", "description": "new"},
        headers=headers,
    )
    assert_error(response, 422, "webhook_url_not_allowed")
    again = await api.client.get(f"/v1/webhooks/{webhook['id']}", headers=headers)
    assert again.json()["url"] == PUBLIC_URL
    assert again.json()["description"] == ""


@pytest.mark.parametrize(
    "body",
    [
        {"url": PUBLIC_URL, "events": ["api_key.nonsense"]},
        {"url": PUBLIC_URL, "events": []},
        {"url": PUBLIC_URL, "events": ["webhook.test"]},  # sent on request, not subscribed to
        {"url": PUBLIC_URL, "events": ["api_key.created"], "description": "d" * 501},
        {"url": PUBLIC_URL, "events": ["api_key.created"], "secret": "chosen"},
        {"url": PUBLIC_URL, "events": ["api_key.created"], "env": "prod"},
        {"url": PUBLIC_URL, "events": "api_key.created"},
        {"url": PUBLIC_URL},
        {"events": ["api_key.created"]},
    ],
)
async def test_an_invalid_body_is_422_validation_error(api: Api, body: dict[str, Any]) -> None:
    headers = await headers_for(api, api.org(), permissions=WEBHOOK_MANAGER)
    response = await api.client.post("/v1/webhooks", json=body, headers=headers)
    assert_error(response, 422, "validation_error")
    assert (await api.client.get("/v1/webhooks", headers=headers)).json()["data"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"events": []},
        {"events": ["nope"]},
        {"enabled": "yes"},
        {"description": "d" * 501},
        {"deleted": True},
    ],
)
async def test_an_invalid_change_is_422_validation_error(api: Api, body: dict[str, Any]) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    response = await api.client.patch(f"/v1/webhooks/{webhook['id']}", json=body, headers=headers)
    assert_error(response, 422, "validation_error")
