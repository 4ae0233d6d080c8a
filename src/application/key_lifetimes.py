"""Key lifetimes: an organization's lifetime policy, and the system's sweep of unused keys.

People read and set the policy (`policy_for`, `set_policy`, asking the access policy); the
sweep (`workers.key_lifetimes`) judges each key with the last use the audit trail gives and
calls `warn_unused`, `revoke_unused` and `revoke_idle`, which judge again on the key as stored,
so a key changed meanwhile (revoked, rolled, warned by another worker) is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from application.registry import KeyRegistry
from domain.access import Command, authorize
from domain.actors import SYSTEM, Actor
from domain.api_key import ApiKey
from domain.key_states import KeyStatus
from domain.lifetime_policy import (
    UNUSED_REASON,
    Finding,
    LifetimePolicy,
    UnusedVerdict,
    findings,
    idle_revocation_due,
    last_active,
    unused_verdict,
)
from domain.organization import Organization

#: The revocation reason of a rolled key revoked once idle (`revoke_when_idle`).
IDLE_REASON = "idle after roll"


def key_findings(
    key: ApiKey, org: Organization, last_used: datetime | None, now: datetime
) -> list[Finding]:
    """What an active key breaks of its org's policy (or soon will); none for other keys."""
    if key.status_at(now) is not KeyStatus.ACTIVE:
        return []
    return findings(
        org.lifetime_policy,
        env=key.env,
        issued_at=key.created_on,
        expires_at=key.expires_at,
        active_at=last_active(key.created_on, last_used),
        warning=key.unused_warning,
        policy_set_at=org.lifetime_policy_set_at,
        now=now,
    )


class KeyLifetimes:
    """The lifetime policy's commands, over the registry's store and rules."""

    def __init__(self, registry: KeyRegistry) -> None:
        self.registry = registry

    def policy_for(self, actor: Actor, org_id: UUID) -> LifetimePolicy:
        """The organization's key-lifetime policy, if `actor` may read it."""
        authorize(actor, Command.READ_KEY_POLICY, org_id=org_id)
        return self.registry.get_organization(org_id).lifetime_policy

    def set_policy(self, actor: Actor, org_id: UUID, policy: LifetimePolicy) -> Organization:
        """Replace the organization's key-lifetime policy (keys already issued stay)."""
        return self.change_policy(actor, org_id, lambda _: policy)

    def change_policy(
        self, actor: Actor, org_id: UUID, change: Callable[[LifetimePolicy], LifetimePolicy]
    ) -> Organization:
        """Change the policy as `change` says, from the one stored (in the same attempt)."""

        def attempt() -> Organization:
            org = self.registry.get_organization(org_id)
            authorize(self.registry.acting(actor, org), Command.SET_KEY_POLICY, org_id=org_id)
            org.set_lifetime_policy(change(org.lifetime_policy), actor)
            self.registry.save(org)
            return org

        return self.registry.retrying(attempt)

    def warn_unused(self, key_id: UUID, last_used: datetime | None) -> datetime | None:
        """Warn that the key will be revoked unused; when it will be (None: not warned now)."""

        def attempt() -> datetime | None:
            key = self.registry.get_key(key_id)
            verdict = self._verdict(key, last_used)
            if verdict is None or verdict.revoke:
                return None
            key.warn_unused(verdict.revoke_at, SYSTEM)
            self.registry.save(key)
            return verdict.revoke_at

        return self.registry.retrying(attempt)

    def revoke_unused(self, key_id: UUID, last_used: datetime | None) -> bool:
        """Revoke the key if it is due to go unused and was warned; True when it was."""

        def attempt() -> bool:
            key = self.registry.get_key(key_id)
            verdict = self._verdict(key, last_used)
            if verdict is None or not verdict.revoke:
                return False
            key.revoke(SYSTEM, UNUSED_REASON)
            self.registry.save(key)
            return True

        return self.registry.retrying(attempt)

    def revoke_idle(self, key_id: UUID, last_used: datetime | None) -> bool:
        """Revoke a rolled key arranged to go when idle, once it is; True when it was."""

        def attempt() -> bool:
            key = self.registry.get_key(key_id)
            now = self.registry.clock()
            if key.status_at(now) is not KeyStatus.EXPIRING:
                return False
            if not idle_revocation_due(key.idle_revocation, last_used, now):
                return False
            key.revoke(SYSTEM, IDLE_REASON)
            self.registry.save(key)
            return True

        return self.registry.retrying(attempt)

    def _verdict(self, key: ApiKey, last_used: datetime | None) -> UnusedVerdict | None:
        now = self.registry.clock()
        if key.status_at(now) is not KeyStatus.ACTIVE:
            return None
        org = self.registry.get_organization(key.org_id)
        return unused_verdict(
            org.lifetime_policy,
            last_active(key.created_on, last_used),
            key.unused_warning,
            org.lifetime_policy_set_at,
            now,
        )
