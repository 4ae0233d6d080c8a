"""Webhook endpoints, their deliveries and the attempts at each, as the API answers them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType


class WebhookEndpoint(msgspec.Struct, kw_only=True):
    """An endpoint; `secret` only in the answers that make one (create, rotate-secret), and
    `deleted` only in the answer to its deletion."""

    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    organization: str
    env: Literal["live", "test"]
    url: str
    events: list[str]
    description: str
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    created_at: datetime
    created_by: str | None
    previous_secret_expires_at: datetime | None
    secret: str | UnsetType = UNSET
    deleted: bool | UnsetType = UNSET


class WebhookEndpointList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[WebhookEndpoint]
    next_cursor: str | None


class WebhookTest(msgspec.Struct, kw_only=True):
    """A test event was asked for; it is delivered like any other event."""

    object: Literal["webhook_test"] = "webhook_test"
    webhook_id: str
    status: Literal["requested"] = "requested"


class DeliveryAttempt(msgspec.Struct, kw_only=True):
    number: int
    at: datetime
    status_code: int | None
    duration_ms: float
    error: str | None
    response_excerpt: str | None


class WebhookDelivery(msgspec.Struct, kw_only=True):
    """One event's delivery to one endpoint; `payload` is null for a key that may not read
    the key object it carries; `attempts` when one delivery is read."""

    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    webhook_id: str
    message_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    created_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    payload: dict[str, Any] | None
    attempts: list[DeliveryAttempt] | UnsetType = UNSET


class WebhookDeliveryList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[WebhookDelivery]
    next_cursor: str | None
