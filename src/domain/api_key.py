"""ApiKey: one credential of an organization, from creation through roll to revocation."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.actors import SYSTEM, Actor
from domain.errors import KeyAlreadyRolled, KeyRevoked, ValidationError
from domain.key_format import Environment, KeyType, generate_key, hash_key, hint_for
from domain.key_limits import check_roll, checked_limits
from domain.key_networks import clean_networks
from domain.key_states import ExpiryCause, ExposureSource, KeyStatus, expiry_cause_in
from domain.lifetime_policy import UnusedWarning
from domain.naming import clean_name
from domain.organization import Organization
from domain.plans import Permission, effective_permissions

#: How long a leaked key keeps working when its org's leak policy is `roll`.
LEAK_ROLL_GRACE = timedelta(hours=1)


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

    class Rolled(Aggregate.Event):
        successor_id: UUID
        expires_at: datetime
        org_id: UUID
        actor: str

    class Revoked(Aggregate.Event):
        """Stopped for good by a person, a key or the system (a leak); never an expiry."""

        reason: str
        org_id: UUID
        actor: str

        @property
        def is_old_style_expiry(self) -> bool:
            """Whether this is an expiry stored before `Expired` existed (the system's
            revocation in an expiry's words), read as an `Expired` (`application.stored_events`).
            """
            return self.reads_as_expiry(self.actor, self.reason)

        @staticmethod
        def reads_as_expiry(actor: str, reason: str) -> bool:
            """Whether a revocation by `actor` for `reason` reads as an old expiry: the one
            place those words are matched (`revoke` refuses them, so none is stored again)."""
            return actor == SYSTEM.name and expiry_cause_in(reason) is not None

    class Expired(Aggregate.Event):
        """The system retired the key: its roll's grace ended, or its expiry time came. Version
        1 is an expiry stored as a `Revoked` in words, read so; `upcast_v1_v2` gives it `cause`.
        """

        class_version = 2

        cause: ExpiryCause
        org_id: UUID
        actor: str

        @property
        def reason(self) -> str:
            """The expiry in words, as the API and the wire (`api_key.revoked`) show it."""
            return ExpiryCause(self.cause).reason

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            cause = expiry_cause_in(state.pop("reason"))
            assert cause is not None, "only an old-style expiry is read as an Expired of v1"
            state["cause"] = cause.value

    class AllowedIpsChanged(Aggregate.Event):
        allowed_ips: list[str]
        org_id: UUID
        actor: str

    class IdleRevocationArranged(Aggregate.Event):
        """At a roll: revoke the old key once unused for `idle_seconds` (before its grace ends)."""

        idle_seconds: int
        org_id: UUID
        actor: str

    class UnusedWarned(Aggregate.Event):
        """The org's policy will revoke this unused key at `revoke_at` unless it is used."""

        revoke_at: datetime
        org_id: UUID
        actor: str

    class Exposed(Aggregate.Event):
        source: ExposureSource
        detail: str
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
        self.expiry_cause: ExpiryCause | None = None  # set when the system retired it
        self.allowed_ips: list[str] = []
        self.exposed_at: datetime | None = None
        self.exposures: list[dict[str, str]] = []
        self.idle_revocation: tuple[datetime, timedelta] | None = None  # (rolled at, idle for)
        self.unused_warning: UnusedWarning | None = None  # from the unused-key sweep

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

        `permissions` restricts the key (None: all of the org's). Whether `actor` may issue it
        is asked before (`domain.access`); the org's lifetime policy is asked here.
        """
        name = clean_name(name, "key name")
        origins, networks = checked_limits(
            org, key_type, permissions, expires_at, allowed_origins, allowed_ips, now
        )
        if actor is not SYSTEM:  # the system's own rolls (a leak's) answer to no org policy
            org.lifetime_policy.refuse(env, expires_at, now)

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

    def status_at(self, now: datetime) -> KeyStatus:
        """active, expiring (rolled, in its grace period), expired or revoked.

        A key the system retired (`Expired`) reads `expired`, as does one past its expiry.
        """
        if self.revoked_at is not None:
            return KeyStatus.REVOKED if self.expiry_cause is None else KeyStatus.EXPIRED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyStatus.EXPIRED
        if self.successor_id is not None:
            return KeyStatus.EXPIRING
        return KeyStatus.ACTIVE

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    # -- commands: each checks its rules, then calls the `@event` method that records (and
    # applies) its event. A `timestamp` parameter gets the event's own time; callers omit it.

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
        self,
        org: Organization,
        *,
        pepper: bytes,
        grace: timedelta,
        actor: Actor,
        now: datetime,
        expires_at: datetime | None = None,
        revoke_when_idle: timedelta | None = None,
    ) -> tuple[ApiKey, str]:
        """Issue a successor and let this key expire after `grace`: zero-downtime rotation.

        The successor expires when this key would have, or at `expires_at`. With
        `revoke_when_idle`, this key is revoked once unused that long (the lifetime sweep)."""
        self._refuse_if_revoked("rolled")
        if self.successor_id is not None:
            raise KeyAlreadyRolled("this key was already rolled; roll its successor instead")
        restriction = self.successor_restriction(org)
        check_roll(self.expiry_due(now), restriction, grace, revoke_when_idle)
        successor, plaintext = ApiKey.issue(
            org,
            name=self.name,
            env=self.env,
            key_type=self.type,
            pepper=pepper,
            actor=actor,
            now=now,
            permissions=restriction,
            expires_at=expires_at or self.expires_at,
            allowed_origins=tuple(self.allowed_origins),
            allowed_ips=tuple(self.allowed_ips),
            predecessor_id=self.id,
        )
        old_expiry = now + grace
        if self.expires_at is not None:
            old_expiry = min(old_expiry, self.expires_at)
        self._rolled(
            successor_id=successor.id, expires_at=old_expiry, org_id=self.org_id, actor=actor.name
        )
        if revoke_when_idle is not None:
            idle = int(revoke_when_idle.total_seconds())
            self._idle_revocation_arranged(idle_seconds=idle, org_id=self.org_id, actor=actor.name)
        return successor, plaintext

    @event(Rolled)
    def _rolled(self, successor_id: UUID, expires_at: datetime, org_id: UUID, actor: str) -> None:
        self.successor_id = successor_id
        self.expires_at = expires_at

    @event(IdleRevocationArranged)
    def _idle_revocation_arranged(
        self, idle_seconds: int, org_id: UUID, actor: str, timestamp: datetime | None = None
    ) -> None:
        self.idle_revocation = (timestamp or self.modified_on, timedelta(seconds=idle_seconds))

    def warn_unused(self, revoke_at: datetime, actor: Actor) -> None:
        """Announce that the unused-key sweep will revoke this key at `revoke_at`."""
        self._refuse_if_revoked("warned")
        self._unused_warned(revoke_at=revoke_at, org_id=self.org_id, actor=actor.name)

    @event(UnusedWarned)
    def _unused_warned(
        self, revoke_at: datetime, org_id: UUID, actor: str, timestamp: datetime | None = None
    ) -> None:
        self.unused_warning = UnusedWarning(timestamp or self.modified_on, revoke_at)

    def revoke(self, actor: Actor, reason: str = "") -> None:
        """Stop the key at once, for good."""
        self._refuse_if_revoked("revoked again")
        if len(reason) > 500:
            raise ValidationError("the revocation reason must be at most 500 characters")
        if self.Revoked.reads_as_expiry(actor.name, reason):
            # Kept apart so that a stored `Revoked` in these words is always an old expiry.
            raise ValidationError("the system retires a key with `expire`, not by revoking it")
        self._revoked(reason=reason, org_id=self.org_id, actor=actor.name)

    @event(Revoked)
    def _revoked(
        self, reason: str, org_id: UUID, actor: str, timestamp: datetime | None = None
    ) -> None:
        self._stopped(timestamp, actor, reason)

    def set_allowed_ips(self, allowed_ips: tuple[str, ...] | list[str], actor: Actor) -> None:
        """Accept requests only from these networks (CIDR); empty = from anywhere."""
        self._refuse_if_revoked("changed")
        networks = clean_networks(allowed_ips)
        if networks and self.type is KeyType.PUBLIC:
            raise ValidationError("IP allowlists apply to secret keys only")
        if networks != self.allowed_ips:
            self._allowed_ips_changed(allowed_ips=networks, org_id=self.org_id, actor=actor.name)

    @event(AllowedIpsChanged)
    def _allowed_ips_changed(self, allowed_ips: list[str], org_id: UUID, actor: str) -> None:
        self.allowed_ips = list(allowed_ips)

    def flag_exposed(self, source: ExposureSource, detail: str, actor: Actor) -> bool:
        """Record that the key may be exposed; once per source (False when nothing changed).

        A revoked key is no longer a risk, so it is not flagged. `detail` says where (an
        origin, a client address, a URL) and must never contain the key itself.
        """
        if self.revoked_at is not None:
            return False
        if any(e["source"] == source for e in self.exposures):
            return False
        self._exposed(source=source, detail=detail[:500], org_id=self.org_id, actor=actor.name)
        return True

    @event(Exposed)
    def _exposed(
        self,
        source: ExposureSource,
        detail: str,
        org_id: UUID,
        actor: str,
        timestamp: datetime | None = None,
    ) -> None:
        if self.exposed_at is None:
            self.exposed_at = timestamp
        self.exposures = [*self.exposures, {"source": str(source), "detail": detail}]

    def expiry_due(self, now: datetime) -> bool:
        """True when the key reached its expiry (or its roll's grace ended) and is not revoked."""
        return self.revoked_at is None and self.expires_at is not None and self.expires_at <= now

    def expire(self, now: datetime, actor: Actor) -> bool:
        """Retire a key whose time is up (the expiry worker); False when not due or done."""
        if not self.expiry_due(now):
            return False
        cause = ExpiryCause.AFTER_GRACE if self.successor_id is not None else ExpiryCause.AT_EXPIRY
        self._expired(cause=cause, org_id=self.org_id, actor=actor.name)
        return True

    @event(Expired)
    def _expired(
        self, cause: ExpiryCause, org_id: UUID, actor: str, timestamp: datetime | None = None
    ) -> None:
        self.expiry_cause = ExpiryCause(cause)
        self._stopped(timestamp, actor, self.expiry_cause.reason)

    def _stopped(self, at: datetime | None, by: str, reason: str) -> None:
        """Revoked or expired (shown as the system's revocation in the expiry's words)."""
        self.revoked_at = at
        self.revoked_by = by
        self.revocation_reason = reason

    def _refuse_if_revoked(self, what: str) -> None:
        if self.revoked_at is not None:
            raise KeyRevoked(f"this key is revoked and cannot be {what}")
