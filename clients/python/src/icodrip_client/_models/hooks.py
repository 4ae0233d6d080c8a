"""Webhook endpoints, their deliveries and the attempts at each, as the API answers them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from icodrip_client._models import fields as f
from icodrip_client._models.fields import Raw


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookEndpoint:
    """An endpoint. `secret` (`whsec_…`) only in the answers to creating one and to rotating
    its secret; `deleted` only in the answer to deleting it."""

    id: str
    organization: str
    env: str
    url: str
    events: tuple[str, ...]
    description: str
    status: str
    disabled_reason: str | None
    created_at: datetime
    created_by: str | None
    previous_secret_expires_at: datetime | None
    secret: str | None = field(default=None, repr=False)
    deleted: bool = False
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: Raw) -> WebhookEndpoint:
        return cls(
            id=f.text(raw, "id"),
            organization=f.text(raw, "organization"),
            env=f.text(raw, "env"),
            url=f.text(raw, "url"),
            events=f.texts(raw, "events"),
            description=f.opt_text(raw, "description") or "",
            status=f.text(raw, "status"),
            disabled_reason=f.opt_text(raw, "disabled_reason"),
            created_at=f.time(raw, "created_at"),
            created_by=f.opt_text(raw, "created_by"),
            previous_secret_expires_at=f.opt_time(raw, "previous_secret_expires_at"),
            secret=f.opt_text(raw, "secret"),
            deleted=f.flag(raw, "deleted"),
            raw=raw,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookTest:
    """A test event was asked for; the webhook worker sends it shortly."""

    webhook_id: str
    status: str
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: Raw) -> WebhookTest:
        return cls(webhook_id=f.text(raw, "webhook_id"), status=f.text(raw, "status"), raw=raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryAttempt:
    """One try at sending a delivery: its response status (None without one) and timing."""

    number: int
    at: datetime
    status_code: int | None
    duration_ms: float | None
    error: str | None
    response_excerpt: str | None

    @classmethod
    def from_dict(cls, raw: Raw) -> DeliveryAttempt:
        return cls(
            number=f.integer(raw, "number"),
            at=f.time(raw, "at"),
            status_code=f.opt_int(raw, "status_code"),
            duration_ms=f.opt_float(raw, "duration_ms"),
            error=f.opt_text(raw, "error"),
            response_excerpt=f.opt_text(raw, "response_excerpt"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookDelivery:
    """One event's delivery to one endpoint, with its attempts.

    `payload` is the body sent (None for a key that may not read the key object it carries).
    """

    id: str
    webhook_id: str
    message_id: str
    event_type: str
    status: str
    attempt_count: int
    created_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    payload: Raw | None
    attempts: tuple[DeliveryAttempt, ...]
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: Raw) -> WebhookDelivery:
        return cls(
            id=f.text(raw, "id"),
            webhook_id=f.text(raw, "webhook_id"),
            message_id=f.text(raw, "message_id"),
            event_type=f.text(raw, "event_type"),
            status=f.text(raw, "status"),
            attempt_count=f.opt_int(raw, "attempt_count") or 0,
            created_at=f.time(raw, "created_at"),
            last_attempt_at=f.opt_time(raw, "last_attempt_at"),
            last_status_code=f.opt_int(raw, "last_status_code"),
            last_error=f.opt_text(raw, "last_error"),
            next_attempt_at=f.opt_time(raw, "next_attempt_at"),
            payload=f.opt_obj(raw, "payload"),
            attempts=tuple(DeliveryAttempt.from_dict(a) for a in f.objects(raw, "attempts")),
            raw=raw,
        )
