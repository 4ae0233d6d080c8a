"""Key lifecycle events on the wire: the versioned messages the relay puts on JetStream.

Only an allow-list of public fields per event type is copied from the stored event, so a
field added to a domain event never leaks onto the bus by accident (the key hash, above all).
The format is documented in docs/events.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from domain.api_key import ApiKey
from domain.ids import format_key_id, format_org_id, format_webhook_id
from domain.organization import Organization
from domain.webhook import WebhookEndpoint

WIRE_VERSION = 1
MSG_ID_PREFIX = "keys-"


class KeyEventMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One lifecycle event, as consumers of `icodrip.keys.>` receive it."""

    v: int = WIRE_VERSION
    position: int
    type: str
    aggregate_id: str
    aggregate_version: int
    org_id: str
    actor: str
    occurred_at: datetime
    data: dict[str, Any]


#: topic of the stored event → (wire type, the public fields that travel with it)
_PUBLIC_FIELDS: dict[type[Any], tuple[str, tuple[str, ...]]] = {
    Organization.Registered: ("organization.registered", ("name", "plan")),
    Organization.PlanChanged: ("organization.plan_changed", ("plan", "previous")),
    Organization.RateLimitSet: ("organization.rate_limit_set", ("requests_per_minute",)),
    Organization.RateLimitCleared: ("organization.rate_limit_cleared", ()),
    Organization.KeyAdded: ("organization.key_added", ("key_id",)),
    Organization.LeakPolicySet: ("organization.leak_policy_set", ("policy",)),
    Organization.LifetimePolicySet: (
        "organization.lifetime_policy_set",
        ("max_lifetime_seconds", "require_expiry", "revoke_unused_after_seconds"),
    ),
    ApiKey.Created: (
        "api_key.created",
        (
            "name",
            "env",
            "type",
            "hint",
            "permissions",
            "expires_at",
            "allowed_origins",
            "predecessor_id",
        ),
    ),
    ApiKey.Renamed: ("api_key.renamed", ("name",)),
    ApiKey.Rolled: ("api_key.rolled", ("successor_id", "expires_at")),
    ApiKey.Revoked: ("api_key.revoked", ("reason",)),
    # An expiry keeps the message it always had: the system's revocation, in the expiry's
    # words (`ApiKey.Expired.reason`), so consumers of `api_key.revoked` see it as before.
    ApiKey.Expired: ("api_key.revoked", ("reason",)),
    ApiKey.AllowedIpsChanged: ("api_key.allowed_ips_changed", ("allowed_ips",)),
    ApiKey.Exposed: ("api_key.exposed", ("source", "detail")),
    ApiKey.IdleRevocationArranged: ("api_key.idle_revocation_arranged", ("idle_seconds",)),
    ApiKey.UnusedWarned: ("api_key.unused_warning", ("revoke_at",)),
    # A webhook endpoint's salt derives its secret: it is never among the public fields.
    Organization.WebhookAdded: ("organization.webhook_added", ("webhook_id",)),
    Organization.WebhookRemoved: ("organization.webhook_removed", ("webhook_id",)),
    WebhookEndpoint.Created: ("webhook.created", ("env", "url", "events", "description")),
    WebhookEndpoint.Changed: ("webhook.changed", ("url", "events", "description")),
    WebhookEndpoint.SecretRotated: ("webhook.secret_rotated", ("previous_until",)),
    WebhookEndpoint.Disabled: ("webhook.disabled", ("reason",)),
    WebhookEndpoint.Enabled: ("webhook.enabled", ()),
    WebhookEndpoint.Deleted: ("webhook.deleted", ()),
    WebhookEndpoint.TestRequested: ("webhook.test_requested", ()),
    WebhookEndpoint.RetryRequested: ("webhook.retry_requested", ("delivery_id",)),
}

_KEY_ID_FIELDS = frozenset({"key_id", "successor_id", "predecessor_id"})

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(KeyEventMessage)


def _public_value(name: str, value: Any) -> Any:
    if isinstance(value, UUID):
        if name == "webhook_id":
            return format_webhook_id(value)
        return format_key_id(value) if name in _KEY_ID_FIELDS else str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def to_message(position: int, event: Any) -> KeyEventMessage:
    """The wire form of a stored domain event at notification `position`."""
    wire_type, fields = _PUBLIC_FIELDS.get(
        type(event), (f"unknown.{type(event).__qualname__.lower()}", ())
    )
    org_id = getattr(event, "org_id", None)
    if org_id is None:  # organization events: the org is the aggregate itself
        org_id = event.originator_id
        aggregate_id = format_org_id(event.originator_id)
    elif isinstance(event, WebhookEndpoint.Event):
        aggregate_id = format_webhook_id(event.originator_id)
    else:
        aggregate_id = format_key_id(event.originator_id)
    return KeyEventMessage(
        position=position,
        type=wire_type,
        aggregate_id=aggregate_id,
        aggregate_version=event.originator_version,
        org_id=format_org_id(org_id),
        actor=getattr(event, "actor", ""),
        occurred_at=event.timestamp,
        data={name: _public_value(name, getattr(event, name, None)) for name in fields},
    )


def subject_for(prefix: str, message: KeyEventMessage) -> str:
    """`icodrip.keys.api_key.revoked` and the like."""
    return f"{prefix}.{message.type}"


def msg_id_for(position: int) -> str:
    """The JetStream de-duplication id of the event at this store position."""
    return f"{MSG_ID_PREFIX}{position}"


def position_of(msg_id: str) -> int:
    """The store position a `Nats-Msg-Id` stands for."""
    return int(msg_id.removeprefix(MSG_ID_PREFIX))


def encode(message: KeyEventMessage) -> bytes:
    return _encoder.encode(message)


def decode(payload: bytes) -> KeyEventMessage:
    return _decoder.decode(payload)
