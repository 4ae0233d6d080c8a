"""The limits a new key is issued with, checked against its organization and its type."""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.errors import PermissionExceeded, ValidationError
from domain.key_format import KeyType
from domain.key_networks import clean_networks, clean_origins
from domain.organization import Organization
from domain.plans import PUBLIC_KEY_PERMISSIONS, Permission, permission_names

#: The longest grace period a roll may give the old key.
MAX_ROLL_GRACE = timedelta(days=30)
#: The shortest idle time a roll may ask before the old key is revoked: the sweep judges idleness
#: by the audit trail, which follows requests by a few seconds.
IDLE_MINIMUM = timedelta(minutes=1)


def check_roll(
    expired: bool,
    restriction: frozenset[Permission] | None,
    grace: timedelta,
    revoke_when_idle: timedelta | None,
) -> None:
    """Refuse to roll an expired key, one whose restriction the plan no longer grants, or
    with a grace period (or idle time before revocation) out of bounds."""
    if expired:
        raise ValidationError("an expired key cannot be rolled")
    if restriction == frozenset():
        raise ValidationError(
            "this key's permissions are no longer part of the organization's plan: "
            "create a new key instead"
        )
    if not timedelta(0) <= grace <= MAX_ROLL_GRACE:
        raise ValidationError(
            f"the grace period must be 0 to {MAX_ROLL_GRACE.days} days, got {grace}"
        )
    if revoke_when_idle is not None and not IDLE_MINIMUM <= revoke_when_idle <= grace:
        raise ValidationError(
            "revoke_when_idle must be at least 1 minute and at most the grace period"
        )


def checked_limits(
    org: Organization,
    key_type: KeyType,
    permissions: frozenset[Permission] | None,
    expires_at: datetime | None,
    allowed_origins: tuple[str, ...],
    allowed_ips: tuple[str, ...],
    now: datetime,
) -> tuple[list[str], list[str]]:
    """The key's cleaned allowed origins and networks, once its limits are found valid."""
    if permissions is not None:
        if not permissions:
            raise ValidationError("a restricted key needs at least one permission")
        beyond_org = permissions - org.permissions
        if beyond_org:
            raise PermissionExceeded(
                f"the organization's plan does not grant {permission_names(beyond_org)}"
            )
    if key_type is KeyType.PUBLIC:
        if permissions is not None and not permissions <= PUBLIC_KEY_PERMISSIONS:
            raise ValidationError("public keys may only carry events:write")
    elif allowed_origins:
        raise ValidationError("allowed origins apply to public keys only")
    if expires_at is not None and expires_at <= now:
        raise ValidationError("expires_at must be in the future")
    origins = clean_origins(allowed_origins)
    networks = clean_networks(allowed_ips)
    if networks and key_type is KeyType.PUBLIC:
        raise ValidationError("IP allowlists apply to secret keys only")
    return origins, networks
