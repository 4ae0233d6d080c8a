"""How webhook endpoints look to people and scripts (API, CLI `--json`, the webhooks themselves).

Their deliveries look as `projections.webhook_delivery_views` says."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from application.views import iso
from domain.ids import format_org_id, format_webhook_id
from domain.webhook import WebhookEndpoint


def moment(unix: float | None) -> str | None:
    """Unix seconds as the contract's RFC 3339 UTC time."""
    return None if unix is None else iso(datetime.fromtimestamp(unix, UTC))


def webhook_view(endpoint: WebhookEndpoint, *, secret: str | None = None) -> dict[str, Any]:
    """The webhook endpoint object; `secret` appears only when one is given (add, rotate)."""
    view: dict[str, Any] = {
        "id": format_webhook_id(endpoint.id),
        "object": "webhook_endpoint",
        "organization": format_org_id(endpoint.org_id),
        "env": endpoint.env.value,
        "url": endpoint.url,
        "events": sorted(endpoint.events),
        "description": endpoint.description,
        "status": "enabled" if endpoint.enabled else "disabled",
        "disabled_reason": endpoint.disabled_reason or None,
        "created_at": iso(endpoint.created_on),
        "created_by": endpoint.created_by,
        "previous_secret_expires_at": iso(endpoint.previous_until),
    }
    if secret is not None:
        view["secret"] = secret
    return view
