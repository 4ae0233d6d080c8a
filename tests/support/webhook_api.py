"""Webhook endpoints in API tests: a fake DNS (the URL check resolves hosts, tests have no
network), keys that may manage webhooks, and deliveries written straight into the log."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from adapters.webhook_urls import resolving_url_check
from application.webhooks import Webhooks
from domain.ids import parse_org_id, parse_webhook_id
from domain.key_format import Environment
from domain.organization import Organization
from domain.plans import Permission
from projections.webhook_deliveries import NewDelivery
from support.api import Api, bearer

#: A public HTTPS URL, as the fake DNS resolves it.
PUBLIC_URL = "https://hooks.example.com/icodrip"
#: What each host resolves to; any other name does not resolve.
FAKE_DNS = {
    "hooks.example.com": ["93.184.215.14"],
    "other.example.com": ["2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "intranet.example.com": ["10.20.30.40"],
    "rebind.example.com": ["93.184.215.14", "127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
}
#: A key that may do everything with webhooks (and read the keys the events carry).
WEBHOOK_MANAGER = {Permission.WEBHOOKS_READ, Permission.WEBHOOKS_WRITE, Permission.API_KEYS_READ}


def fake_resolve(host: str) -> list[str]:
    try:
        return FAKE_DNS[host]
    except KeyError:
        raise OSError(f"no such host: {host}") from None


def resolve_fakely(api: Api) -> None:
    """The API's webhooks judge URLs as in production (no private addresses), on the fake DNS."""
    services = api.process.services
    services.webhooks = Webhooks(
        services.registry,
        pepper=services.settings.key_pepper,
        check_url=resolving_url_check(allow_private=False, resolve=fake_resolve),
    )


async def headers_for(
    api: Api,
    org: Organization,
    env: Environment = Environment.LIVE,
    permissions: set[Permission] | None = None,
) -> dict[str, str]:
    """Bearer headers of a new key of `org` (all of the plan's permissions unless restricted)."""
    return bearer(await api.key(org, env, permissions=permissions))


async def add_webhook(api: Api, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    """A new endpoint (public URL, key events unless said otherwise), as the 201 shows it."""
    document = {"url": PUBLIC_URL, "events": ["api_key.created", "api_key.revoked"], **body}
    response = await api.client.post("/v1/webhooks", json=document, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def new_delivery(
    webhook: dict[str, Any],
    *,
    created_at: float | None = None,
    event_type: str = "api_key.created",
) -> NewDelivery:
    """A delivery of one event to `webhook` (an endpoint object), due now."""
    return delivery_to(
        parse_webhook_id(webhook["id"]),
        parse_org_id(webhook["organization"]),
        created_at=created_at,
        event_type=event_type,
    )


def delivery_to(
    endpoint_id: uuid.UUID,
    org_id: uuid.UUID,
    *,
    created_at: float | None = None,
    event_type: str = "api_key.created",
) -> NewDelivery:
    """A delivery of one event to the endpoint, due now."""
    created = time.time() if created_at is None else created_at
    payload = {"type": event_type, "data": {"object": {"id": "key_" + "0" * 32}}}
    return NewDelivery(
        id=f"whd_{uuid.uuid4().hex}",
        endpoint_id=endpoint_id,
        org_id=org_id,
        msg_id=f"msg_{uuid.uuid4().hex}",
        event_type=event_type,
        payload=msgspec.json.encode(payload),
        created_at=created,
        next_attempt_at=created,
        give_up_at=created + 3 * 86400,
    )
