"""How organizations and keys look to people and scripts (CLI `--json`, API responses)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.api_key import ApiKey
from domain.ids import format_key_id, format_org_id
from domain.key_states import KeyStatus
from domain.lifetime_policy import last_active, pending_unused_revocation
from domain.organization import Organization


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def organization_view(org: Organization) -> dict[str, Any]:
    return {
        "id": format_org_id(org.id),
        "object": "organization",
        "name": org.name,
        "plan": org.plan.value,
        "leak_policy": org.leak_policy.value,
        "key_policy": org.lifetime_policy.as_seconds(),
        "permissions": sorted(p.value for p in org.permissions),
        "rate_limit_per_minute": org.rate_limit_per_minute,
        "created_at": iso(org.created_on),
    }


def _idle_seconds(key: ApiKey, now: datetime) -> int | None:
    """A rolled key in its grace that goes once idle: for how long unused."""
    if key.idle_revocation is None or key.status_at(now) is not KeyStatus.EXPIRING:
        return None
    return int(key.idle_revocation[1].total_seconds())


def _unused_revocation(
    key: ApiKey, org: Organization, now: datetime, last_used: datetime | None
) -> datetime | None:
    """An active key warned that it goes unused: when, while the warning holds."""
    if key.unused_warning is None or key.status_at(now) is not KeyStatus.ACTIVE:
        return None
    return pending_unused_revocation(
        org.lifetime_policy,
        last_active(key.created_on, last_used),
        key.unused_warning,
        org.lifetime_policy_set_at,
    )


def api_key_view(
    key: ApiKey,
    org: Organization,
    now: datetime,
    *,
    secret: str | None = None,
    last_used_at: datetime | None = None,
) -> dict[str, Any]:
    """The API key object of the contract; `key` appears only when a secret is given."""
    view: dict[str, Any] = {
        "id": format_key_id(key.id),
        "object": "api_key",
        "organization": format_org_id(key.org_id),
        "name": key.name,
        "env": key.env.value,
        "type": key.type.value,
        "hint": key.hint,
        "status": key.status_at(now),
        "permissions": sorted(p.value for p in key.effective_permissions(org)),
        "restricted": key.permissions is not None,
        "allowed_origins": list(key.allowed_origins),
        "allowed_ips": list(key.allowed_ips),
        "exposed_at": iso(key.exposed_at),
        "exposure": list(key.exposures),
        "rate_limit_per_minute": org.rate_limit_per_minute,
        "created_at": iso(key.created_on),
        "created_by": key.created_by,
        "expires_at": iso(key.expires_at),
        "last_used_at": iso(last_used_at),
        "revoked_at": iso(key.revoked_at),
        "revoked_by": key.revoked_by,
        "revocation_reason": key.revocation_reason,
        "rolled_from": None if key.predecessor_id is None else format_key_id(key.predecessor_id),
        "rolled_to": None if key.successor_id is None else format_key_id(key.successor_id),
        "revoke_when_idle_seconds": _idle_seconds(key, now),
        "unused_revocation_at": iso(_unused_revocation(key, org, now, last_used_at)),
    }
    if secret is not None:
        view["key"] = secret
    return view
