"""What the access policy (`domain.access`) is asked with: the facts of a key or webhook
endpoint a command touches, and what a key or endpoint will be able to do once it is done."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from domain.actors import KeyActor
from domain.api_key import ApiKey
from domain.errors import PermissionExceeded
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Permission, effective_permissions


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What the policy needs to know of a key a command touches."""

    key_id: UUID
    org_id: UUID
    env: Environment
    type: KeyType
    permissions: frozenset[Permission]  # effective: under its organization's current plan
    created_by: str

    @classmethod
    def of(cls, key: ApiKey, org: Organization) -> KeyFacts:
        """The facts of `key`, a key of `org`."""
        return cls(
            key.id, key.org_id, key.env, key.type, key.effective_permissions(org), key.created_by
        )


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What a key will be able to do once a command is done: a new key, a roll's successor,
    or a key whose allowed IPs change."""

    org_id: UUID
    env: Environment
    type: KeyType
    permissions: frozenset[Permission]  # effective
    allowed_ips: tuple[str, ...] = ()
    expires_at: datetime | None = None

    @classmethod
    def of(
        cls,
        org: Organization,
        env: Environment,
        key_type: KeyType,
        limits: Limits,
    ) -> KeyGrant:
        """A `key_type` key of `org` in `env`, within `limits`."""
        permissions = effective_permissions(
            org.permissions, limits.restriction, public=key_type == KeyType.PUBLIC
        )
        return cls(
            org.id,
            Environment(env),
            KeyType(key_type),
            permissions,
            tuple(limits.allowed_ips),
            limits.expires_at,
        )


@dataclass(frozen=True, slots=True)
class WebhookFacts:
    """What the policy needs to know of a webhook endpoint a command touches."""

    webhook_id: UUID
    org_id: UUID
    env: Environment


@dataclass(frozen=True, slots=True)
class WebhookGrant:
    """What an endpoint will receive once a command is done: its environment's events of
    these types (some carry key objects)."""

    org_id: UUID
    env: Environment
    events: frozenset[str]


@dataclass(frozen=True, slots=True)
class Limits:
    """What narrows a key: its restriction (None: the plan's), allowed IPs, expiry."""

    restriction: frozenset[Permission] | None = None
    allowed_ips: tuple[str, ...] = ()
    expires_at: datetime | None = None


def key_actor(key: ApiKey, org: Organization, now: datetime) -> KeyActor:
    """`key` acting now, as stored; PermissionExceeded if it can no longer act at all."""
    if key.is_revoked or (key.expires_at is not None and key.expires_at <= now):
        raise PermissionExceeded("this key was revoked or has expired")
    return KeyActor(
        key.id,
        key.org_id,
        key.env,
        key.type,
        key.effective_permissions(org),
        restriction=key.permissions,
        allowed_ips=tuple(key.allowed_ips),
        expires_at=key.expires_at,
        retiring=key.successor_id is not None or key.exposed_at is not None,
    )
