"""`/v1/webhooks/{id}/deliveries`: each delivery with its attempts, newest first, in pages that
neither skip nor repeat; a retry is asked for with an event the worker acts on; a delivery is
only ever found through its own endpoint."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from domain.ids import parse_webhook_id
from domain.plans import Permission
from domain.webhook import WebhookEndpoint
from projections.webhook_deliveries import Attempt, DeliveryLog, DeliveryStatus
from support.api import Api, assert_error
from support.webhook_api import add_webhook, headers_for, new_delivery, resolve_fakely


@pytest.fixture(autouse=True)
async def fake_dns(api: Api) -> AsyncIterator[None]:
    resolve_fakely(api)
    yield


@pytest.fixture
def log(api: Api) -> DeliveryLog:
    """The delivery log the API reads, written to here as the webhook worker would."""
    return api.process.services.deliveries


async def page(
    api: Api, headers: dict[str, str], webhook: dict[str, Any], **params: Any
) -> dict[str, Any]:
    response = await api.client.get(
        f"/v1/webhooks/{webhook['id']}/deliveries", params=params, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def every_page(
    api: Api, headers: dict[str, str], webhook: dict[str, Any], **params: Any
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        extra = {} if cursor is None else {"cursor": cursor}
        body = await page(api, headers, webhook, **params, **extra)
        found += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def token(document: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(document)).decode().rstrip("=")


# -- the list ---------------------------------------------------------------------------------


async def test_a_new_endpoint_has_no_deliveries(api: Api) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    assert await page(api, headers, webhook) == {"object": "list", "data": [], "next_cursor": None}


async def test_deliveries_list_newest_first_with_their_attempts(api: Api, log: DeliveryLog) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    now = time.time()
    older, newer = new_delivery(webhook, created_at=now - 60), new_delivery(webhook, created_at=now)
    log.enqueue([older, newer])
    log.record_attempt(
        Attempt(older.id, 1, now - 50, 500, 12.34, None, "oops"),
        status=DeliveryStatus.PENDING,
        next_attempt_at=now + 30,
    )
    log.record_attempt(
        Attempt(older.id, 2, now - 20, 200, 8.0, None, "ok"),
        status=DeliveryStatus.SUCCEEDED,
        next_attempt_at=None,
    )

    body = await page(api, headers, webhook)
    assert [d["id"] for d in body["data"]] == [newer.id, older.id]
    pending, succeeded = body["data"]
    assert pending["status"] == "pending"
    assert pending["attempts"] == []
    assert pending["next_attempt_at"] is not None
    assert succeeded["object"] == "webhook_delivery"
    assert succeeded["webhook_id"] == webhook["id"]
    assert succeeded["status"] == "succeeded"
    assert succeeded["attempt_count"] == 2
    assert succeeded["last_status_code"] == 200
    assert succeeded["next_attempt_at"] is None
    assert succeeded["payload"]["type"] == "api_key.created"
    assert [(a["number"], a["status_code"]) for a in succeeded["attempts"]] == [(1, 500), (2, 200)]
    assert succeeded["attempts"][0]["duration_ms"] == 12.3
    assert succeeded["attempts"][0]["response_excerpt"] == "oops"


async def test_pages_neither_skip_nor_repeat_deliveries_made_at_the_same_moment(
    api: Api, log: DeliveryLog
) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    now = time.time()
    made = [new_delivery(webhook, created_at=now - (i // 3)) for i in range(7)]
    log.enqueue(made)
    first = await page(api, headers, webhook, limit=2)
    assert len(first["data"]) == 2 and first["next_cursor"]
    listed = await every_page(api, headers, webhook, limit=2)
    expected = sorted(made, key=lambda d: (d.created_at, d.id), reverse=True)
    assert [d["id"] for d in listed] == [d.id for d in expected]
    assert len(await every_page(api, headers, webhook)) == 7  # limit 20 by default


async def test_the_status_filter_lists_only_deliveries_in_that_status(
    api: Api, log: DeliveryLog
) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    done, waiting = new_delivery(webhook), new_delivery(webhook)
    log.enqueue([done, waiting])
    log.record_attempt(
        Attempt(done.id, 1, time.time(), 204, 3.0, None, ""),
        status=DeliveryStatus.SUCCEEDED,
        next_attempt_at=None,
    )
    succeeded = await page(api, headers, webhook, status="succeeded")
    assert [d["id"] for d in succeeded["data"]] == [done.id]
    pending = await page(api, headers, webhook, status="pending")
    assert [d["id"] for d in pending["data"]] == [waiting.id]
    assert (await page(api, headers, webhook, status="failed"))["data"] == []


async def test_another_endpoints_deliveries_are_not_listed(api: Api, log: DeliveryLog) -> None:
    headers = await headers_for(api, api.org())
    mine, other = await add_webhook(api, headers), await add_webhook(api, headers)
    log.enqueue([new_delivery(other)])
    assert (await page(api, headers, mine))["data"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not a cursor"},
        {"cursor": "%%%"},
        {"cursor": token(["wd1", 1.5])},
        {"cursor": token(["wd1", -1, "whd_x"])},
        {"cursor": token(["wd1", 1e300, "whd_x"])},
        {"cursor": token(["wd1", 1.5, "x" * 500])},
        {"cursor": token(["ar1", 1.5, "whd_x"])},
        {"cursor": token({"created_at": 1.5})},
        {"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()},
        {"status": "done"},
        {"limit": 0},
        {"limit": 101},
        {"limit": "many"},
    ],
)
async def test_bad_paging_or_filters_are_422_never_500(api: Api, params: dict[str, Any]) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    response = await api.client.get(
        f"/v1/webhooks/{webhook['id']}/deliveries", params=params, headers=headers
    )
    assert_error(response, 422, "validation_error")


async def test_a_key_event_payload_is_shown_only_to_a_key_that_may_read_keys(
    api: Api, log: DeliveryLog
) -> None:
    org = api.org()
    webhook = await add_webhook(api, await headers_for(api, org))
    log.enqueue([new_delivery(webhook), new_delivery(webhook, event_type="webhook.disabled")])
    reader = await headers_for(api, org, permissions={Permission.WEBHOOKS_READ})
    shown = {d["event_type"]: d["payload"] for d in (await page(api, reader, webhook))["data"]}
    assert shown["api_key.created"] is None
    assert shown["webhook.disabled"]["type"] == "webhook.disabled"


# -- one delivery, and retrying it ------------------------------------------------------------


async def test_one_delivery_is_read_with_its_attempts(api: Api, log: DeliveryLog) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    delivery = new_delivery(webhook)
    log.enqueue([delivery])
    log.record_attempt(
        Attempt(delivery.id, 1, time.time(), None, 10_000.0, "timed out", ""),
        status=DeliveryStatus.PENDING,
        next_attempt_at=time.time() + 60,
    )
    response = await api.client.get(
        f"/v1/webhooks/{webhook['id']}/deliveries/{delivery.id}", headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == delivery.id
    assert response.json()["last_error"] == "timed out"
    assert [a["error"] for a in response.json()["attempts"]] == ["timed out"]


async def test_a_retry_is_accepted_and_stored_for_the_worker(api: Api, log: DeliveryLog) -> None:
    headers = await headers_for(api, api.org())
    webhook = await add_webhook(api, headers)
    delivery = new_delivery(webhook)
    log.enqueue([delivery])
    response = await api.client.post(
        f"/v1/webhooks/{webhook['id']}/deliveries/{delivery.id}/retry", headers=headers
    )
    assert response.status_code == 202, response.text
    assert response.json()["id"] == delivery.id
    assert response.json()["object"] == "webhook_delivery"
    assert response.json()["attempts"] == []
    endpoint = api.registry.get_webhook(parse_webhook_id(webhook["id"]))
    stored = [
        api.registry.mapper.to_domain_event(s)
        for s in api.registry.recorder.select_events(endpoint.id)
    ]
    retries = [e for e in stored if isinstance(e, WebhookEndpoint.RetryRequested)]
    assert [e.delivery_id for e in retries] == [delivery.id]


async def test_an_unknown_delivery_or_one_of_another_endpoint_is_404(
    api: Api, log: DeliveryLog
) -> None:
    headers = await headers_for(api, api.org())
    mine, other = await add_webhook(api, headers), await add_webhook(api, headers)
    theirs = new_delivery(other)
    log.enqueue([theirs])
    base = f"/v1/webhooks/{mine['id']}/deliveries"
    for delivery_id in ("whd_" + "0" * 32, theirs.id, "x" * 300):
        assert_error(
            await api.client.get(f"{base}/{delivery_id}", headers=headers), 404, "not_found"
        )
        retried = await api.client.post(f"{base}/{delivery_id}/retry", headers=headers)
        assert_error(retried, 404, "not_found")
    stored = api.registry.recorder.select_events(parse_webhook_id(mine["id"]))
    assert len(stored) == 1  # created, and no retry asked for


async def test_another_organization_cannot_read_or_retry_a_delivery(
    api: Api, log: DeliveryLog
) -> None:
    webhook = await add_webhook(api, await headers_for(api, api.org()))
    delivery = new_delivery(webhook)
    log.enqueue([delivery])
    stranger = await headers_for(api, api.org())
    base = f"/v1/webhooks/{webhook['id']}/deliveries"
    assert_error(await api.client.get(base, headers=stranger), 404, "not_found")
    assert_error(await api.client.get(f"{base}/{delivery.id}", headers=stranger), 404, "not_found")
    retried = await api.client.post(f"{base}/{delivery.id}/retry", headers=stranger)
    assert_error(retried, 404, "not_found")


async def test_retrying_needs_webhooks_write(api: Api, log: DeliveryLog) -> None:
    org = api.org()
    webhook = await add_webhook(api, await headers_for(api, org))
    delivery = new_delivery(webhook)
    log.enqueue([delivery])
    reader = await headers_for(api, org, permissions={Permission.WEBHOOKS_READ})
    response = await api.client.post(
        f"/v1/webhooks/{webhook['id']}/deliveries/{delivery.id}/retry", headers=reader
    )
    assert_error(response, 403, "insufficient_permissions")
