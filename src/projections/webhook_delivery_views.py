"""How webhook deliveries and their attempts look to people and scripts (API, CLI `--json`)."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import msgspec

from application.webhook_views import moment
from domain.errors import NotFound
from domain.ids import format_webhook_id
from projections.webhook_deliveries import Attempt, Delivery, DeliveryLog

#: The cursor format's tag: a cursor of another format (or none of ours) is refused.
_CURSOR_TAG = "wd1"
#: Longer than any delivery id the log holds ("whd_" + 32 hex digits).
MAX_DELIVERY_ID = 100
#: Latest created_at a cursor may name (year 2100): a crafted one must not reach the store.
LATEST = 4_102_444_800.0


def endpoint_delivery(log: DeliveryLog, endpoint_id: UUID, delivery_id: str) -> Delivery:
    """The endpoint's delivery of that id; NotFound for none, or one of another endpoint (a
    delivery is reached only through its own endpoint)."""
    found = None if len(delivery_id) > MAX_DELIVERY_ID else log.get(delivery_id)
    if found is None or found.endpoint_id != endpoint_id:
        raise NotFound("no such webhook delivery")
    return found


def delivery_cursor(delivery: Delivery) -> str:
    """An opaque token for the page after `delivery` (older deliveries): the API's
    `next_cursor` and the dashboard's "older" link alike."""
    raw = msgspec.json.encode([_CURSOR_TAG, delivery.created_at, delivery.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_delivery_cursor(text: str) -> tuple[float, str]:
    """The (created_at, id) a cursor names; ValueError for anything `delivery_cursor` did not
    make (each caller says so in its own words)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        tag, created_at, delivery_id = msgspec.json.decode(raw, type=tuple[str, float, str])
    except (binascii.Error, ValueError, msgspec.DecodeError):
        tag, created_at, delivery_id = "", math.nan, ""
    if (
        tag != _CURSOR_TAG
        or not 0 <= created_at <= LATEST  # NaN included
        or not delivery_id
        or len(delivery_id) > MAX_DELIVERY_ID
    ):
        raise ValueError("not a delivery cursor")
    return created_at, delivery_id


def attempt_view(attempt: Attempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "at": moment(attempt.at),
        "status_code": attempt.status_code,
        "duration_ms": round(attempt.duration_ms, 1),
        "error": attempt.error,
        "response_excerpt": attempt.excerpt,
    }


def delivery_view(delivery: Delivery, attempts: Sequence[Attempt] | None = None) -> dict[str, Any]:
    """A delivery of one event to one endpoint; with its attempts when they were read."""
    view: dict[str, Any] = {
        "id": delivery.id,
        "object": "webhook_delivery",
        "webhook_id": format_webhook_id(delivery.endpoint_id),
        "message_id": delivery.msg_id,
        "event_type": delivery.event_type,
        "status": delivery.status.value,
        "attempt_count": delivery.attempts,
        "created_at": moment(delivery.created_at),
        "last_attempt_at": moment(delivery.last_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "next_attempt_at": moment(delivery.next_attempt_at),
        "payload": msgspec.json.decode(delivery.payload),
    }
    if attempts is not None:
        view["attempts"] = [attempt_view(a) for a in attempts]
    return view
