"""Settings > Webhooks over HTTP (in-process, no browser): the one-time secret, the forms'
refusals, roles through the access policy, CSRF, and deliveries with their attempts.

Deliveries are written straight into the delivery log (`services.deliveries`), as the webhook
worker writes them; a test or retry asked for on a page is an event on the endpoint, which the
worker acts on (the browser test, `test_webhooks_in_browser.py`, runs it).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from dashboard.asgi import Dashboard, csrf_token_in, missing_headers, sign_in
from domain.actors import OPERATOR
from domain.ids import format_webhook_id
from domain.key_format import Environment
from domain.organization import Organization
from domain.user import Role
from domain.webhook import WebhookEndpoint, WebhookEventType
from domain.webhook_signing import SECRET_PREFIX
from projections.webhook_deliveries import Attempt, DeliveryStatus, NewDelivery

#: A public address written as an IP: the URL check needs no DNS to accept it, and no request
#: is ever sent to it (no webhook worker runs here).
PUBLIC_URL = "https://93.184.215.14/hooks/icodrip"
SECRET_SHAPE = re.compile(re.escape(SECRET_PREFIX) + r"[A-Za-z0-9+/=]{20,}")
HTMX = {"HX-Request": "true"}


@pytest.fixture
async def owner(dashboard: Dashboard) -> AsyncIterator[tuple[httpx.AsyncClient, str, Organization]]:
    """A signed-in owner of a new organization: its client, CSRF token and organization."""
    org = dashboard.org()
    user = dashboard.user(org, Role.OWNER)
    async with dashboard.client() as client:
        yield client, await sign_in(client, user.email), org


def add_endpoint(dashboard: Dashboard, org: Organization, **asked: Any) -> WebhookEndpoint:
    """An endpoint added as the operator would add it."""
    fields: dict[str, Any] = {"url": PUBLIC_URL, "events": ["api_key.created"], **asked}
    webhooks = dashboard.process.services.webhooks
    return webhooks.add(OPERATOR, org.id, **fields).endpoint


def endpoints_of(dashboard: Dashboard, org: Organization) -> list[WebhookEndpoint]:
    return dashboard.process.services.webhooks.endpoints(OPERATOR, org.id)


def event_names(dashboard: Dashboard, endpoint: WebhookEndpoint) -> list[str]:
    """The names of the endpoint's stored events, oldest first."""
    store = dashboard.process.services.registry.repository.event_store
    return [type(e).__name__ for e in store.get(endpoint.id)]


def delivery(endpoint: WebhookEndpoint, at: float, event_type: str = "api_key.created") -> Any:
    """A delivery of one event to `endpoint`, created at `at`, as the worker enqueues it."""
    return NewDelivery(
        id="whd_" + uuid.uuid4().hex,
        endpoint_id=endpoint.id,
        org_id=endpoint.org_id,
        msg_id="msg_" + uuid.uuid4().hex,
        event_type=event_type,
        payload=b'{"type": "%s", "data": {"n": 1}}' % event_type.encode(),
        created_at=at,
        next_attempt_at=at,
        give_up_at=at + 3 * 86400,
    )


def fields(page: httpx.Response, name: str) -> list[str]:
    """The values of the page's inputs named `name` that are checked (or every text one)."""
    found = re.findall(rf'<input type="(\w+)"[^>]*name="{name}" value="([^"]*)"([^>]*)>', page.text)
    return [value for kind, value, rest in found if kind == "text" or " checked" in rest]


async def test_an_added_endpoints_secret_is_shown_once_and_never_again(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, token, org = owner
    listing = await client.get("/dashboard/webhooks")
    assert listing.status_code == 200 and 'id="add"' in listing.text
    assert 'aria-current="page">Webhooks</a>' in listing.text  # Settings' menu names it
    for event_type in WebhookEventType:
        assert f'name="events" value="{event_type.value}"' in listing.text

    added = await client.post(
        "/dashboard/webhooks",
        data={
            "url": PUBLIC_URL,
            "description": "Billing service",
            "env": "test",
            "events": ["api_key.revoked", "api_key.created"],
            "_csrf_token": token,
        },
        headers=HTMX,
    )
    assert added.status_code == 200, added.text
    assert missing_headers(added) == []  # never cached: the secret is in it
    (secret,) = SECRET_SHAPE.findall(added.text)
    assert 'id="new-secret"' in added.text and "will not be shown again" in added.text
    assert '<tbody id="webhooks-body" hx-swap-oob="true">' in added.text  # the list, refreshed
    assert '<section class="card" id="add" hx-swap-oob="true">' in added.text  # a fresh form

    (endpoint,) = endpoints_of(dashboard, org)
    assert endpoint.url == PUBLIC_URL and endpoint.env is Environment.TEST
    assert endpoint.description == "Billing service"
    assert sorted(endpoint.events) == ["api_key.created", "api_key.revoked"]
    assert secret == dashboard.process.services.webhooks.secret(endpoint)

    webhook_id = format_webhook_id(endpoint.id)
    for path in ("/dashboard/webhooks", f"/dashboard/webhooks/{webhook_id}"):
        again = await client.get(path)
        assert again.status_code == 200, path
        assert secret not in again.text and SECRET_PREFIX not in again.text, path
        assert PUBLIC_URL in again.text and "Billing service" in again.text

    # Without htmx (no script), the whole page comes back with the secret, once.
    plain = await client.post(
        "/dashboard/webhooks",
        data={"url": PUBLIC_URL, "events": "api_key.rolled", "_csrf_token": token},
    )
    assert plain.status_code == 200 and "<html" in plain.text
    (second,) = SECRET_SHAPE.findall(plain.text)
    assert second != secret and missing_headers(plain) == []
    assert len(endpoints_of(dashboard, org)) == 2


async def test_a_refused_endpoint_is_explained_in_the_form_as_it_was_typed(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, token, org = owner
    cases = [
        ({"url": "http://127.0.0.1:8080/hook", "events": "api_key.created"}, "must use https"),
        ({"url": "https://127.0.0.1/hook", "events": "api_key.created"}, "address not allowed"),
        ({"url": "https://intranet.local/hook", "events": "api_key.created"}, "host not allowed"),
        ({"url": PUBLIC_URL}, "choose at least one event type"),
        ({"url": PUBLIC_URL, "events": "key.nonsense"}, "unknown webhook event"),
        ({"url": PUBLIC_URL, "events": "api_key.created", "env": "staging"}, "choose live or"),
        ({"url": PUBLIC_URL, "events": "api_key.created", "description": "d" * 501}, "at most"),
    ]
    for form, message in cases:
        refused = await client.post("/dashboard/webhooks", data={**form, "_csrf_token": token})
        assert refused.status_code == 422, (form, refused.text[:300])
        assert 'id="error-message"' in refused.text and message in refused.text, form
        assert fields(refused, "url") == [form["url"]]  # kept, to be corrected
        if "events" in form and form["events"] in {t.value for t in WebhookEventType}:
            assert fields(refused, "events") == [form["events"]]
    assert endpoints_of(dashboard, org) == []

    # With htmx, the form comes back in place of itself, with the message.
    refused = await client.post(
        "/dashboard/webhooks",
        data={"url": "ftp://files.example.com/", "events": "api_key.created", "_csrf_token": token},
        headers=HTMX,
    )
    assert refused.status_code == 422
    assert refused.headers["hx-retarget"] == "#add" and refused.headers["hx-reswap"] == "outerHTML"
    assert refused.text.startswith('<section class="card" id="add">')
    assert "Not added: a webhook URL must use https" in refused.text
    assert endpoints_of(dashboard, org) == []


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.DEVELOPER])
async def test_readers_see_the_pages_but_no_change_is_offered_or_done(
    dashboard: Dashboard, role: Role
) -> None:
    org = dashboard.org()
    endpoint = add_endpoint(dashboard, org)
    dashboard.process.services.deliveries.enqueue([delivery(endpoint, time.time())])
    reader = dashboard.user(org, role)
    webhook_id = format_webhook_id(endpoint.id)
    (stored,) = dashboard.process.services.deliveries.deliveries(endpoint.id, limit=5)
    async with dashboard.client() as client:
        token = await sign_in(client, reader.email)
        listing = await client.get("/dashboard/webhooks")
        assert listing.status_code == 200 and PUBLIC_URL in listing.text
        assert 'id="add"' not in listing.text and 'id="add-not-allowed"' in listing.text
        detail = await client.get(f"/dashboard/webhooks/{webhook_id}")
        assert detail.status_code == 200 and stored.id in detail.text
        for offered in ('id="send-test"', ">Retry<", 'id="edit"', 'id="rotate"', 'id="delete"'):
            assert offered not in detail.text, offered
        assert 'id="manage-not-allowed"' in detail.text

        # Asked for anyway, with a valid token: refused by the policy, with its message.
        before = event_names(dashboard, endpoint)
        for path, form in [
            ("/dashboard/webhooks", {"url": PUBLIC_URL, "events": "api_key.created"}),
            (f"/dashboard/webhooks/{webhook_id}/edit", {"url": PUBLIC_URL, "events": "x"}),
            (f"/dashboard/webhooks/{webhook_id}/disable", {}),
            (f"/dashboard/webhooks/{webhook_id}/rotate", {}),
            (f"/dashboard/webhooks/{webhook_id}/delete", {"confirm": "yes"}),
            (f"/dashboard/webhooks/{webhook_id}/test", {}),
            (f"/dashboard/webhooks/{webhook_id}/deliveries/{stored.id}/retry", {}),
        ]:
            refused = await client.post(path, data={**form, "_csrf_token": token})
            assert refused.status_code == 403, (path, refused.status_code)
            assert f"your role ({role.value}) does not allow you to manage webhooks" in (
                refused.text
            ), path
            assert SECRET_PREFIX not in refused.text
    assert event_names(dashboard, endpoint) == before
    assert len(endpoints_of(dashboard, org)) == 1


async def test_another_organizations_endpoint_does_not_exist_for_a_user(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, token, _ = owner
    theirs = add_endpoint(dashboard, dashboard.org())
    webhook_id = format_webhook_id(theirs.id)
    assert (await client.get(f"/dashboard/webhooks/{webhook_id}")).status_code == 404
    for action in ("test", "rotate", "disable"):
        answer = await client.post(
            f"/dashboard/webhooks/{webhook_id}/{action}", data={"_csrf_token": token}
        )
        assert answer.status_code == 404, action
    assert (await client.get("/dashboard/webhooks/we_nonsense")).status_code == 404
    assert event_names(dashboard, theirs) == ["Created"]


async def test_forms_without_the_csrf_token_change_nothing(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, _, org = owner
    endpoint = add_endpoint(dashboard, org)
    webhook_id = format_webhook_id(endpoint.id)
    for path, form in [
        ("/dashboard/webhooks", {"url": PUBLIC_URL, "events": "api_key.created"}),
        (f"/dashboard/webhooks/{webhook_id}/test", {}),
        (f"/dashboard/webhooks/{webhook_id}/rotate", {}),
        (f"/dashboard/webhooks/{webhook_id}/delete", {"confirm": "yes"}),
    ]:
        for token in (None, "forged"):
            data = form if token is None else {**form, "_csrf_token": token}
            refused = await client.post(path, data=data)
            assert refused.status_code == 403, (path, token)
            assert "could not be verified" in refused.text
    assert event_names(dashboard, endpoint) == ["Created"]
    assert len(endpoints_of(dashboard, org)) == 1


async def test_the_endpoint_page_lists_deliveries_newest_first_with_every_attempt(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, _, org = owner
    endpoint = add_endpoint(dashboard, org)
    log = dashboard.process.services.deliveries
    start = time.time() - 3600
    made = [delivery(endpoint, start + 60 * n) for n in range(25)]
    log.enqueue(made)
    failing, fixed = made[-1], made[-2]
    log.record_attempt(
        Attempt(failing.id, 1, start + 3000, 500, 812.4, None, "upstream broke"),
        status=DeliveryStatus.PENDING,
        next_attempt_at=start + 3060,
    )
    log.record_attempt(
        Attempt(failing.id, 2, start + 3060, None, 10_000.0, "timed out after 10 s", ""),
        status=DeliveryStatus.FAILED,
        next_attempt_at=None,
    )
    log.record_attempt(
        Attempt(fixed.id, 1, start + 3100, 204, 35.0, None, ""),
        status=DeliveryStatus.SUCCEEDED,
        next_attempt_at=None,
    )
    webhook_id = format_webhook_id(endpoint.id)

    listing = await client.get("/dashboard/webhooks")
    row = re.search(rf'<tr data-webhook-id="{webhook_id}".*?</tr>', listing.text, re.S)
    assert row, listing.text
    pending = re.search(r'data-count="pending">(\d+)<', row.group(0))
    assert pending and pending.group(1) == "23"
    assert re.search(r'data-count="failed"><span class="status status-failed">1<', row.group(0))

    page = await client.get(f"/dashboard/webhooks/{webhook_id}")
    assert page.status_code == 200
    shown = re.findall(r'data-delivery-id="(whd_\w+)" data-status="(\w+)"', page.text)
    assert [d for d, _ in shown] == [d.id for d in reversed(made)][:20]
    assert shown[0][1] == "failed" and shown[1][1] == "succeeded" and shown[2][1] == "pending"
    first = page.text.split(f'data-delivery-id="{failing.id}"')[1].split("</article>")[0]
    assert first.count("<tr data-attempt=") == 2
    for shown_text in ("500", "812 ms", "upstream broke", "timed out after 10 s", "10000 ms"):
        assert shown_text in first, shown_text
    assert ">Retry</button>" in first
    assert "hx-trigger" not in page.text  # nothing asked for: the list does not refresh

    older = re.search(r'id="older" href="([^"]+)"', page.text)
    assert older
    rest = await client.get(older.group(1).replace("&amp;", "&"))
    assert rest.status_code == 200
    shown = re.findall(r'data-delivery-id="(whd_\w+)"', rest.text)
    assert shown == [d.id for d in reversed(made)][20:]
    assert 'id="older"' not in rest.text and "Newest" in rest.text

    for forged in ("nonsense", "nan~whd_1", "1e300~whd_1", "12~whd_1;drop", "12~"):
        refused = await client.get(f"/dashboard/webhooks/{webhook_id}", params={"before": forged})
        assert refused.status_code == 422, forged


async def test_test_and_retry_are_asked_of_the_worker_and_the_page_watches_for_them(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, token, org = owner
    endpoint = add_endpoint(dashboard, org)
    other = add_endpoint(dashboard, org)
    log = dashboard.process.services.deliveries
    mine, theirs = delivery(endpoint, time.time() - 60), delivery(other, time.time() - 60)
    log.enqueue([mine, theirs])
    webhook_id = format_webhook_id(endpoint.id)

    asked = await client.post(f"/dashboard/webhooks/{webhook_id}/test", data={"_csrf_token": token})
    assert asked.status_code == 303
    location = asked.headers["location"]
    assert location.startswith(f"/dashboard/webhooks/{webhook_id}?since=")
    assert event_names(dashboard, endpoint)[-1] == "TestRequested"
    watching = await client.get(location.split("#")[0])
    assert "webhook.test event is on its way" in watching.text
    assert 'hx-trigger="every 1s"' in watching.text and 'id="watching"' in watching.text
    # htmx asks for the deliveries alone while it waits.
    partial = await client.get(location.split("#")[0], headers=HTMX)
    assert partial.text.startswith('<section class="card" id="deliveries"')

    retried = await client.post(
        f"/dashboard/webhooks/{webhook_id}/deliveries/{mine.id}/retry",
        data={"_csrf_token": token},
    )
    assert retried.status_code == 303 and "?since=" in retried.headers["location"]
    assert event_names(dashboard, endpoint)[-1] == "RetryRequested"
    # Once a delivery was tried since, the page stops refreshing.
    since = float(retried.headers["location"].split("since=")[1].split("#")[0])
    log.record_attempt(
        Attempt(mine.id, 1, since + 0.5, 200, 12.0, None, "ok"),
        status=DeliveryStatus.SUCCEEDED,
        next_attempt_at=None,
    )
    settled = await client.get(f"/dashboard/webhooks/{webhook_id}?since={since}")
    assert "hx-trigger" not in settled.text and 'data-status="succeeded"' in settled.text

    # Only through its own endpoint: another endpoint's delivery, or none, is not found.
    for delivery_id in (theirs.id, "whd_" + uuid.uuid4().hex, "x" * 300):
        refused = await client.post(
            f"/dashboard/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
            data={"_csrf_token": token},
        )
        assert refused.status_code == 404, delivery_id
    assert event_names(dashboard, endpoint).count("RetryRequested") == 1
    assert event_names(dashboard, other) == ["Created"]


async def test_an_owner_edits_disables_rotates_and_deletes_an_endpoint(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, token, org = owner
    endpoint = add_endpoint(dashboard, org, description="First")
    first_secret = dashboard.process.services.webhooks.secret(endpoint)
    webhook_id = format_webhook_id(endpoint.id)
    path = f"/dashboard/webhooks/{webhook_id}"
    webhooks = dashboard.process.services.webhooks

    page = await client.get(path)
    assert fields(page, "url") == [PUBLIC_URL] and fields(page, "description") == ["First"]
    assert fields(page, "events") == ["api_key.created"]

    edited = await client.post(
        f"{path}/edit",
        data={
            "url": PUBLIC_URL,
            "description": "Second",
            "events": ["api_key.expired", "webhook.disabled"],
            "_csrf_token": token,
        },
    )
    assert edited.status_code == 303 and edited.headers["location"] == path
    changed = webhooks.get(endpoint.id)
    assert changed.description == "Second"
    assert sorted(changed.events) == ["api_key.expired", "webhook.disabled"]

    refused = await client.post(
        f"{path}/edit",
        data={"url": "https://localhost/x", "events": "api_key.created", "_csrf_token": token},
    )
    assert refused.status_code == 422 and "Not saved: host not allowed" in refused.text
    assert fields(refused, "url")[0] == "https://localhost/x"
    assert webhooks.get(endpoint.id).url == PUBLIC_URL  # nothing of it was saved
    assert sorted(webhooks.get(endpoint.id).events) == ["api_key.expired", "webhook.disabled"]

    disabled = await client.post(f"{path}/disable", data={"_csrf_token": token})
    assert disabled.status_code == 303 and not webhooks.get(endpoint.id).enabled
    page = await client.get(path)
    assert 'id="enable"' in page.text and 'id="send-test"' not in page.text
    enabled = await client.post(f"{path}/enable", data={"_csrf_token": token})
    assert enabled.status_code == 303 and webhooks.get(endpoint.id).enabled

    rotated = await client.post(f"{path}/rotate", data={"_csrf_token": token}, headers=HTMX)
    assert rotated.status_code == 200 and missing_headers(rotated) == []
    (new_secret,) = SECRET_SHAPE.findall(rotated.text)
    assert new_secret != first_secret
    assert new_secret == webhooks.secret(webhooks.get(endpoint.id))
    assert 'id="previous-until"' in rotated.text
    page = await client.get(path)
    assert new_secret not in page.text and first_secret not in page.text
    assert "Previous secret" in page.text

    unconfirmed = await client.post(f"{path}/delete", data={"_csrf_token": token})
    assert unconfirmed.status_code == 422 and "tick the box" in unconfirmed.text
    deleted = await client.post(f"{path}/delete", data={"confirm": "yes", "_csrf_token": token})
    assert deleted.status_code == 303 and deleted.headers["location"] == "/dashboard/webhooks"
    listing = await client.get("/dashboard/webhooks")
    assert "Deleted the endpoint" in listing.text and webhook_id not in listing.text
    assert (await client.get(path)).status_code == 404
    assert csrf_token_in(listing)
