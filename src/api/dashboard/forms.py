"""What the dashboard's forms and filters say, read into the application's terms.

Each reader refuses what its form cannot have sent with a `ValidationError` (a 422 page);
who may send it is the access policy's to say, asked before a form is read (`pages`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from api.dashboard.audit_views import PERIOD_CHOICES, STATUS_CHOICES, AuditFilters
from api.dashboard.views import EXPIRY_CHOICES, GRACE_CHOICES
from api.routes.audit_requests import parse_status
from application.key_management import KeyOrder, expiry_after
from application.registry import utc_now
from domain.errors import ValidationError
from domain.ids import format_org_id, parse_key_id
from domain.naming import clean_name
from projections.request_audit_query import AuditQuery


def form_text(form: Any, name: str, default: str = "") -> str:
    """A form field as text (`default` when absent or a file)."""
    value = form.get(name, default)
    return value if isinstance(value, str) else default


def key_name(form: Any) -> str:
    """The key name a form gives, cleaned (ValidationError when empty or too long)."""
    return clean_name(form_text(form, "name"), "key name")


def key_order(form: Any) -> KeyOrder:
    """The Create API Key form as an order (ValidationError, or ValueError for a bad field)."""
    name = key_name(form)
    restricted = form_text(form, "restricted") == "on"
    days = int(form_text(form, "expires_in_days", "0") or 0)
    if days not in {choice.value for choice in EXPIRY_CHOICES}:
        raise ValidationError("choose an expiry from the list")
    return KeyOrder.asked(
        name,
        form_text(form, "env", "live"),
        permissions=form.getall("permissions", []) if restricted else None,
        expires_at=expiry_after(days, utc_now()),
    )


def grace(form: Any) -> timedelta:
    """How long a rolled key keeps working, as the Roll form chose it."""
    text = form_text(form, "grace_seconds", "86400")
    if not text.isdigit() or int(text) not in {choice.value for choice in GRACE_CHOICES}:
        raise ValidationError("choose a grace period from the list")
    return timedelta(seconds=int(text))


def revoke_when_idle(form: Any) -> timedelta | None:
    """How long the old key may sit unused before it is revoked, as the Roll form says (empty:
    only at the grace period's end); its bounds are the domain's to judge."""
    text = form_text(form, "revoke_when_idle_minutes").strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 6:
        raise ValidationError("revoke when idle: a whole number of minutes, or empty")
    return timedelta(minutes=int(text))


def successor_expiry(form: Any) -> datetime | None:
    """When a roll's new key expires, as the Roll form chose it (None: as the old key does)."""
    text = form_text(form, "expires_in_days")
    if not text:
        return None
    if not text.isdigit() or int(text) not in {choice.value for choice in EXPIRY_CHOICES[1:]}:
        raise ValidationError("choose an expiry from the list")
    return expiry_after(int(text), utc_now())


def revocation_reason(form: Any) -> str:
    """Why a key is revoked, as the form says (at most 500 characters)."""
    return form_text(form, "reason")[:500]


def audit_filters(key: str | None, status: str | None, period: int) -> AuditFilters:
    """The audit log's filters from its query string."""
    if key:
        parse_key_id(key)
    if (status or "") not in STATUS_CHOICES:
        raise ValidationError("choose a status from the list")
    if period not in {choice.value for choice in PERIOD_CHOICES}:
        raise ValidationError("choose a period from the list")
    return AuditFilters(key or "", status or "", period)


def audit_query(
    filters: AuditFilters, org_id: UUID, now: float, before: int | None = None
) -> AuditQuery:
    """The requests of `org_id` the filters select, older than `before` (a row's sequence)."""
    status_min, status_max = parse_status(filters.status or None)
    return AuditQuery(
        org_id=format_org_id(org_id),
        key_id=filters.key or None,
        status_min=status_min,
        status_max=status_max,
        since=now - filters.period if filters.period else None,
        before_seq=before,
    )
