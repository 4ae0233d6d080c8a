"""How webhook deliveries and their attempts look to people and scripts (API, CLI `--json`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from application.webhook_views import moment
from domain.ids import format_webhook_id
from projections.webhook_deliveries import Attempt, Delivery


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
