"""ApiKey: one credential of an organization, from creation through roll to revocation."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.actors import SYSTEM, Actor
from domain.errors import KeyAlreadyRolled, KeyRevoked, PermissionExceeded, ValidationError
from domain.key_format import Environment, KeyType, generate_key, hash_key, hint_for
from domain.naming import clean_name
from domain.organization import Organization
from domain.plans import PUBLIC_KEY_PERMISSIONS, Permission, effective_permissions

#: The longest grace period a roll may give the old key.
MAX_ROLL_GRACE = timedelta(days=30)
MAX_ALLOWED_ORIGINS = 50
MAX_ALLOWED_IPS = 100
#: How long a leaked key keeps working when its org's leak policy is `roll`.
LEAK_ROLL_GRACE = timedelta(hours=1)


class ExposureSource:
    """Why a key is flagged as possibly exposed (`ApiKey.Exposed.source`)."""

    BROWSER = "browser"  # a secret key sent with browser signals (Origin, CORS)
    PLAIN_HTTP = "plain_http"  # a secret key sent over plain HTTP
    LEAK_REPORT = "leak_report"  # a scanner (e.g. GitHub secret scanning) found it public


#: `ApiKey.Revoked.reason` when the expiry worker retires a key.
EXPIRED_AFTER_GRACE = "expired: the grace period of its roll ended"
EXPIRED_AT_EXPIRY = "expired: its expiry time was reached"
_EXPIRY_REASONS = frozenset({EXPIRED_AFTER_GRACE, EXPIRED_AT_EXPIRY})


def is_expiry(revoked_by: str | None, reason: str | None) -> bool:
    """Whether a revocation (by whom, why) is the expiry worker retiring a key: it `expired`."""
    return revoked_by == SYSTEM.name and reason in _EXPIRY_REASONS


class KeyStatus:
    ACTIVE = "active"
    EXPIRING = "expiring"
    REVOKED = "revoked"
    EXPIRED = "expired"


class ApiKey(Aggregate):
    """A key's lifecycle; it holds only the key's hash, never the key.

    Every event carries `org_id` and `actor`, so each one reads on its own in an audit.
    """

    class Created(Aggregate.Created):
        org_id: UUID
        name: str
        env: Environment
        type: KeyType
        key_hash: str
        hint: str
        permissions: list[str] | None
        expires_at: datetime | None
        allowed_origins: list[str]
        predecessor_id: UUID | None
        actor: str

    class Renamed(Aggregate.Event):
        name: str
        org_id: UUID
        actor: str

    @event(Created)
    def __init__(
        self,
        org_id: UUID,
        name: str,
        env: Environment,
        type: KeyType,
        key_hash: str,
        hint: str,
        permissions: list[str] | None,
        expires_at: datetime | None,
        allowed_origins: list[str],
        predecessor_id: UUID | None,
        actor: str,
    ) -> None:
        self.org_id = org_id
        self.name = name
        self.env = Environment(env)
        self.type = KeyType(type)
        self.key_hash = key_hash
        self.hint = hint
        self.permissions = None if permissions is None else frozenset(map(Permission, permissions))
        self.expires_at = expires_at
        self.allowed_origins = list(allowed_origins)
        self.predecessor_id = predecessor_id
        self.created_by = actor
        self.successor_id: UUID | None = None
        self.revoked_at: datetime | None = None
        self.revoked_by: str | None = None
        self.revocation_reason: str | None = None
        self.allowed_ips: list[str] = []
        self.exposed_at: datetime | None = None
        self.exposures: list[dict[str, str]] = []

    @classmethod
    def issue(
        cls,
        org: Organization,
        *,
        name: str,
        env: Environment,
        key_type: KeyType,
        pepper: bytes,
        actor: Actor,
        now: datetime,
        permissions: frozenset[Permission] | None = None,
        expires_at: datetime | None = None,
        allowed_origins: tuple[str, ...] = (),
        allowed_ips: tuple[str, ...] = (),
        predecessor_id: UUID | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key for `org` and its plaintext, which the caller shows once and forgets.

        `permissions` restricts the key (None inherits all of the org's). Whether `actor` may
        issue it is the access policy's question, asked before (`domain.access`).
        """
        name = clean_name(name, "key name")
        if permissions is not None:
            if not permissions:
                raise ValidationError("a restricted key needs at least one permission")
            beyond_org = permissions - org.permissions
            if beyond_org:
                raise PermissionExceeded(
                    f"the organization's plan does not grant {_names(beyond_org)}"
                )
        if key_type is KeyType.PUBLIC:
            if permissions is not None and not permissions <= PUBLIC_KEY_PERMISSIONS:
                raise ValidationError("public keys may only carry events:write")
        elif allowed_origins:
            raise ValidationError("allowed origins apply to public keys only")
        if expires_at is not None and expires_at <= now:
            raise ValidationError("expires_at must be in the future")
        origins = [_clean_origin(o) for o in allowed_origins]
        if len(origins) > MAX_ALLOWED_ORIGINS:
            raise ValidationError(f"at most {MAX_ALLOWED_ORIGINS} allowed origins")
        networks = clean_networks(allowed_ips)
        if networks and key_type is KeyType.PUBLIC:
            raise ValidationError("IP allowlists apply to secret keys only")

        plaintext = generate_key(key_type, env)
        key = cls(
            org_id=org.id,
            name=name,
            env=env,
            type=key_type,
            key_hash=hash_key(plaintext, pepper),
            hint=hint_for(plaintext),
            permissions=None if permissions is None else sorted(permissions),
            expires_at=expires_at,
            allowed_origins=origins,
            predecessor_id=predecessor_id,
            actor=actor.name,
        )
        if networks:
            key.set_allowed_ips(networks, actor)
        org.add_key(key.id, actor=actor)
        return key, plaintext

    # -- reading ---------------------------------------------------------------------

    def effective_permissions(self, org: Organization) -> frozenset[Permission]:
        """What this key may do now: its own restriction within the org's current plan."""
        return effective_permissions(
            org.permissions, self.permissions, public=self.type is KeyType.PUBLIC
        )

    def successor_restriction(self, org: Organization) -> frozenset[Permission] | None:
        """The restriction a roll gives the successor: this key's, within the org's plan now."""
        return None if self.permissions is None else self.permissions & org.permissions

    def status_at(self, now: datetime) -> str:
        """active, expiring (rolled, in its grace period), expired or revoked.

        A key the expiry worker revoked (at its expiry time) reads `expired`.
        """
        if self.revoked_at is not None:
            if is_expiry(self.revoked_by, self.revocation_reason):
                return KeyStatus.EXPIRED
            return KeyStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyStatus.EXPIRED
        if self.successor_id is not None:
            return KeyStatus.EXPIRING
        return KeyStatus.ACTIVE

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    # -- commands --------------------------------------------------------------------

    def rename(self, name: str, actor: Actor) -> None:
        """Give the key a new descriptive name."""
        self._refuse_if_revoked("renamed")
        name = clean_name(name, "key name")
        if name != self.name:
            self._renamed(name=name, org_id=self.org_id, actor=actor.name)

    @event(Renamed)
    def _renamed(self, name: str, org_id: UUID, actor: str) -> None:
        self.name = name

    def roll(
        self, org: Organization, *, pepper: bytes, grace: timedelta, actor: Actor, now: datetime
    ) -> tuple[ApiKey, str]:
        """Issue a successor and let this key expire after `grace`: zero-downtime rotation."""
        self._refuse_if_revoked("rolled")
        if self.successor_id is not None:
            raise KeyAlreadyRolled("this key was already rolled; roll its successor instead")
        if self.expires_at is not None and self.expires_at <= now:
            raise ValidationError("an expired key cannot be rolled")
        if not timedelta(0) <= grace <= MAX_ROLL_GRACE:
            raise ValidationError(
                f"the grace period must be 0 to {MAX_ROLL_GRACE.days} days, got {grace}"
            )
        restriction = self.successor_restriction(org)
        if restriction == frozenset():
            raise ValidationError(
                "this key's permissions are no longer part of the organization's plan: "
                "create a new key instead"
            )
        successor, plaintext = ApiKey.issue(
            org,
            name=self.name,
            env=self.env,
            key_type=self.type,
            pepper=pepper,
            actor=actor,
            now=now,
            permissions=restriction,
            expires_at=self.expires_at,
            allowed_origins=tuple(self.allowed_origins),
            allowed_ips=tuple(self.allowed_ips),
            predecessor_id=self.id,
        )
        old_expiry = now + grace
        if self.expires_at is not None:
            old_expiry = min(old_expiry, self.expires_at)
        self.trigger_event(
            self.Rolled,
            successor_id=successor.id,
            expires_at=old_expiry,
            org_id=self.org_id,
            actor=actor.name,
        )
        return successor, plaintext

    class Rolled(Aggregate.Event):
        successor_id: UUID
        expires_at: datetime
        org_id: UUID
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.successor_id = self.successor_id
            aggregate.expires_at = self.expires_at

    def revoke(self, actor: Actor, reason: str = "") -> None:
        """Stop the key at once, for good."""
        self._refuse_if_revoked("revoked again")
        if len(reason) > 500:
            raise ValidationError("the revocation reason must be at most 500 characters")
        self.trigger_event(self.Revoked, reason=reason, org_id=self.org_id, actor=actor.name)

    class Revoked(Aggregate.Event):
        reason: str
        org_id: UUID
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.revoked_at = self.timestamp
            aggregate.revoked_by = self.actor
            aggregate.revocation_reason = self.reason

    def set_allowed_ips(self, allowed_ips: tuple[str, ...] | list[str], actor: Actor) -> None:
        """Accept requests only from these networks (CIDR); empty = from anywhere."""
        self._refuse_if_revoked("changed")
        networks = clean_networks(allowed_ips)
        if networks and self.type is KeyType.PUBLIC:
            raise ValidationError("IP allowlists apply to secret keys only")
        if networks != self.allowed_ips:
            self.trigger_event(
                self.AllowedIpsChanged,
                allowed_ips=networks,
                org_id=self.org_id,
                actor=actor.name,
            )

    class AllowedIpsChanged(Aggregate.Event):
        allowed_ips: list[str]
        org_id: UUID
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.allowed_ips = list(self.allowed_ips)

    def flag_exposed(self, source: str, detail: str, actor: Actor) -> bool:
        """Record that the key may be exposed; once per source (False when nothing changed).

        A revoked key is no longer a risk, so it is not flagged. `detail` says where (an
        origin, a client address, a URL) and must never contain the key itself.
        """
        if self.revoked_at is not None:
            return False
        if any(e["source"] == source for e in self.exposures):
            return False
        detail = detail[:500]
        self.trigger_event(
            self.Exposed, source=source, detail=detail, org_id=self.org_id, actor=actor.name
        )
        return True

    class Exposed(Aggregate.Event):
        source: str
        detail: str
        org_id: UUID
        actor: str

        def apply(self, aggregate: Any) -> None:
            if aggregate.exposed_at is None:
                aggregate.exposed_at = self.timestamp
            aggregate.exposures = [
                *aggregate.exposures,
                {"source": self.source, "detail": self.detail},
            ]

    def expiry_due(self, now: datetime) -> bool:
        """True when the key reached its expiry (or its roll's grace ended) and is not revoked."""
        return self.revoked_at is None and self.expires_at is not None and self.expires_at <= now

    def expire(self, now: datetime, actor: Actor) -> bool:
        """Revoke a key whose time is up (the expiry worker); False when not due or done."""
        if not self.expiry_due(now):
            return False
        reason = EXPIRED_AFTER_GRACE if self.successor_id is not None else EXPIRED_AT_EXPIRY
        self.trigger_event(self.Revoked, reason=reason, org_id=self.org_id, actor=actor.name)
        return True

    def _refuse_if_revoked(self, what: str) -> None:
        if self.revoked_at is not None:
            raise KeyRevoked(f"this key is revoked and cannot be {what}")


def _names(permissions: frozenset[Permission]) -> str:
    return ", ".join(sorted(p.value for p in permissions))


def clean_networks(values: tuple[str, ...] | list[str]) -> list[str]:
    """CIDR networks (or single addresses) in canonical form, sorted and without duplicates."""
    networks: set[str] = set()
    for value in values:
        try:
            networks.add(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError:
            raise ValidationError(
                f"allowed IP {value[:60]!r} must be an address or CIDR such as 203.0.113.0/24"
            ) from None
    if len(networks) > MAX_ALLOWED_IPS:
        raise ValidationError(f"at most {MAX_ALLOWED_IPS} allowed IP networks")
    return sorted(networks)


def _clean_origin(origin: str) -> str:
    """`scheme://host[:port]` with nothing after it, as browsers send in `Origin`."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
        raise ValidationError(f"allowed origin {origin[:80]!r} must look like https://example.com")
    if parts.query or parts.fragment or parts.username:
        raise ValidationError(f"allowed origin {origin[:80]!r} must be scheme://host[:port] only")
    return f"{parts.scheme}://{parts.netloc.lower()}"
