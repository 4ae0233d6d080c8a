"""KeyRegistry: the event-sourced application every entry point (CLI, API, dashboard) calls."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Mapper

from application.stored_events import KeyStoreMapper
from domain.access import (
    Command,
    KeyFacts,
    KeyGrant,
    Limits,
    authorize,
    inherited_limits,
    key_actor,
    sees,
)
from domain.actors import SYSTEM, Actor, KeyActor
from domain.api_key import LEAK_ROLL_GRACE, ApiKey
from domain.errors import DomainError, NotFound
from domain.key_format import Environment, KeyType, redact_keys
from domain.key_networks import clean_networks
from domain.key_states import LEAK_SOURCES, ExposureSource
from domain.organization import LeakPolicy, Organization
from domain.plans import Permission, Plan
from domain.webhook import WebhookEndpoint

T = TypeVar("T")

#: Attempts for a command that lost an optimistic-concurrency race before giving up.
COMMAND_ATTEMPTS = 5


class Conflict(DomainError):
    """Another writer kept changing the same aggregate; the caller may try again."""

    code = "conflict"


@dataclass(frozen=True)
class IssuedKey:
    """A key just created or rolled, with its plaintext: show it once, then drop it."""

    key: ApiKey
    secret: str = field(repr=False)  # never in a repr, a log or an error


def utc_now() -> datetime:
    return datetime.now(UTC)


class KeyRegistry(Application[UUID]):
    """Organizations and their API keys, with every change stored as events.

    Every command takes the actor asking for it and asks the access policy first
    (`domain.access.authorize`), with aggregates read in the same attempt: whatever the entry
    point (API, dashboard, CLI), the same rules decide.
    """

    name = "KeyRegistry"
    snapshotting_intervals = {Organization: 100}

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        pepper: bytes,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(env)
        self._pepper = pepper
        self.clock = clock

    def construct_mapper(self) -> Mapper[UUID]:
        """The library's mapper, reading expiries stored before `ApiKey.Expired` as such."""
        return self.factory.mapper(
            transcoder=self.construct_transcoder(), mapper_class=KeyStoreMapper
        )

    # -- organizations -----------------------------------------------------------------

    def register_organization(self, name: str, plan: Plan, actor: Actor) -> Organization:
        """Create an organization; its keys inherit the plan's permissions."""
        authorize(actor, Command.MANAGE_ORGANIZATION)
        org = Organization.register(name, plan, actor)
        self.save(org)
        return org

    def change_plan(self, org_id: UUID, plan: Plan, actor: Actor) -> Organization:
        return self._update_org(org_id, actor, lambda org: org.change_plan(plan, actor))

    def set_rate_limit(self, org_id: UUID, requests_per_minute: int, actor: Actor) -> Organization:
        return self._update_org(
            org_id, actor, lambda org: org.set_rate_limit(requests_per_minute, actor)
        )

    def clear_rate_limit(self, org_id: UUID, actor: Actor) -> Organization:
        return self._update_org(org_id, actor, lambda org: org.clear_rate_limit(actor))

    def set_leak_policy(self, org_id: UUID, policy: LeakPolicy, actor: Actor) -> Organization:
        return self._update_org(org_id, actor, lambda org: org.set_leak_policy(policy, actor))

    def get_organization(self, org_id: UUID) -> Organization:
        return self._get(Organization, org_id, "organization")

    # -- keys ----------------------------------------------------------------------------

    def create_key(
        self,
        org_id: UUID,
        *,
        name: str,
        env: Environment,
        key_type: KeyType,
        actor: Actor,
        permissions: frozenset[Permission] | None = None,
        expires_at: datetime | None = None,
        allowed_origins: tuple[str, ...] = (),
        allowed_ips: tuple[str, ...] = (),
    ) -> IssuedKey:
        """A new key; the key and its org are saved together, atomically.

        What is not asked is inherited from the issuer where it has limits of its own
        (`access.inherited_limits`): a restricted, fenced or expiring key passes them on.
        """
        asked = Limits(permissions, tuple(clean_networks(allowed_ips)), expires_at)

        def attempt() -> IssuedKey:
            org = self.get_organization(org_id)
            acting = self.acting(actor, org)
            limits = inherited_limits(acting, org.permissions, asked)
            authorize(acting, Command.CREATE_KEY, grant=KeyGrant.of(org, env, key_type, limits))
            key, secret = ApiKey.issue(
                org,
                name=name,
                env=env,
                key_type=key_type,
                pepper=self._pepper,
                actor=actor,
                now=self.clock(),
                permissions=limits.restriction,
                expires_at=limits.expires_at,
                allowed_origins=allowed_origins,
                allowed_ips=limits.allowed_ips,
            )
            self.save(org, key)
            return IssuedKey(key, secret)

        return self.retrying(attempt)

    def roll_key(
        self,
        key_id: UUID,
        *,
        grace: timedelta,
        actor: Actor,
        expires_at: datetime | None = None,
        revoke_when_idle: timedelta | None = None,
    ) -> IssuedKey:
        """Issue the key's successor (expiring like the key, or at `expires_at`); the old key
        keeps working for `grace`, or until unused for `revoke_when_idle` (`ApiKey.roll`)."""

        def attempt() -> IssuedKey:
            key = self.get_key(key_id)
            org = self.get_organization(key.org_id)
            expiry = expires_at or key.expires_at
            inherits = Limits(key.successor_restriction(org), tuple(key.allowed_ips), expiry)
            authorize(
                self.acting(actor, org),
                Command.ROLL_KEY,
                key=KeyFacts.of(key, org),
                grant=KeyGrant.of(org, key.env, key.type, inherits),
            )
            successor, secret = key.roll(
                org,
                pepper=self._pepper,
                grace=grace,
                actor=actor,
                now=self.clock(),
                expires_at=expires_at,
                revoke_when_idle=revoke_when_idle,
            )
            self.save(org, key, successor)
            return IssuedKey(successor, secret)

        return self.retrying(attempt)

    def revoke_key(self, key_id: UUID, *, actor: Actor, reason: str = "") -> ApiKey:
        """Revoke a key for good; a concurrent revoke makes this one fail with KeyRevoked."""
        return self._update_key(
            key_id, actor, Command.REVOKE_KEY, lambda key: key.revoke(actor, reason)
        )

    def rename_key(self, key_id: UUID, *, name: str, actor: Actor) -> ApiKey:
        return self._update_key(
            key_id, actor, Command.RENAME_KEY, lambda key: key.rename(name, actor)
        )

    def change_key(
        self,
        key_id: UUID,
        *,
        actor: Actor,
        name: str | None = None,
        allowed_ips: tuple[str, ...] | list[str] | None = None,
    ) -> ApiKey:
        """Rename the key and/or replace its IP allowlist, both or neither (one transaction)."""
        networks = None if allowed_ips is None else tuple(clean_networks(allowed_ips))

        def attempt() -> ApiKey:
            key = self.get_key(key_id)
            org = self.get_organization(key.org_id)
            acting, facts = self.acting(actor, org), KeyFacts.of(key, org)
            if name is not None:
                authorize(acting, Command.RENAME_KEY, key=facts)
            if networks is not None:
                after = KeyGrant(key.org_id, key.env, key.type, facts.permissions, networks)
                authorize(acting, Command.SET_KEY_ALLOWED_IPS, key=facts, grant=after)
            if name is not None:
                key.rename(name, actor)
            if networks is not None:
                key.set_allowed_ips(networks, actor)
            self.save(key)
            return key

        return self.retrying(attempt)

    def flag_exposed(self, key_id: UUID, *, source: ExposureSource, detail: str) -> bool:
        """Flag the key as possibly exposed (once per source); True when newly flagged."""

        def attempt() -> bool:
            key = self.get_key(key_id)
            changed = key.flag_exposed(source, detail, SYSTEM)
            if changed:
                self.save(key)
            return changed

        return self.retrying(attempt)

    def expire_key(self, key_id: UUID) -> bool:
        """Retire the key (`ApiKey.Expired`) if its expiry, or its roll's grace, has passed;
        True when it did. Safe to race: the loser re-reads the key, retired, and does nothing."""

        def attempt() -> bool:
            key = self.get_key(key_id)
            changed = key.expire(self.clock(), SYSTEM)
            if changed:
                self.save(key)
            return changed

        return self.retrying(attempt)

    def respond_to_leak(
        self,
        key_id: UUID,
        *,
        url: str,
        source: str,
        exposure: ExposureSource = ExposureSource.LEAK_REPORT,
    ) -> str:
        """Flag a leaked key; revoke or roll it per its org's policy: `revoked`/`rolled`/`none`."""

        def attempt() -> str:
            key = self.get_key(key_id)
            if key.is_revoked or key.type is KeyType.PUBLIC:  # a public key is public by design
                return "none"
            org = self.get_organization(key.org_id)
            reported_before = any(e["source"] in LEAK_SOURCES for e in key.exposures)
            detail = f"{source[:100]}: {url}" if source and url else source[:100] or url
            key.flag_exposed(exposure, redact_keys(detail), SYSTEM)
            if reported_before and key.successor_id is not None:
                self.save(key)  # acted on already: a retry, a replay or another source
                return "none"  # must not cut the grace short
            now = self.clock()
            if (
                org.leak_policy is LeakPolicy.ROLL
                and key.successor_id is None
                and not (key.expires_at is not None and key.expires_at <= now)
                and key.successor_restriction(org) != frozenset()
            ):
                successor, _ = key.roll(
                    org, pepper=self._pepper, grace=LEAK_ROLL_GRACE, actor=SYSTEM, now=now
                )
                self.save(org, key, successor)
                return "rolled"
            # Revoked when it cannot be rolled (its restriction grants nothing under the plan
            # any more): a leaked key is never left working because no successor can be made.
            reason = f"leaked: reported at {redact_keys(url)}"[:500]
            if exposure is ExposureSource.PUBLIC_REVOCATION:
                reason = "leaked: revoked publicly"
            key.revoke(SYSTEM, reason)
            self.save(key)
            return "revoked"

        return self.retrying(attempt)

    def get_key(self, key_id: UUID) -> ApiKey:
        """The key, whoever asks: for the system's own use; people's reads go by `key_for`."""
        return self._get(ApiKey, key_id, "API key")

    def get_webhook(self, webhook_id: UUID) -> WebhookEndpoint:
        """The webhook endpoint, whoever asks (deleted ones too): see `application.webhooks`."""
        return self._get(WebhookEndpoint, webhook_id, "webhook endpoint")

    def list_keys(self, org_id: UUID) -> list[ApiKey]:
        """The organization's keys, oldest first: for the system's own use (see `keys_for`)."""
        org = self.get_organization(org_id)
        return [self.get_key(key_id) for key_id in org.key_ids]

    def key_for(self, actor: Actor, key_id: UUID) -> ApiKey:
        """The key, if `actor` may read it; otherwise NotFound (or the policy's refusal)."""
        key = self.get_key(key_id)
        authorize(actor, Command.READ_KEYS, key=self.facts(key))
        return key

    def keys_for(self, actor: Actor, org_id: UUID) -> list[ApiKey]:
        """The organization's keys that `actor` may see, oldest first."""
        org = self.readable_org(actor, org_id)
        return self.visible_keys(actor, org, [self.get_key(key_id) for key_id in org.key_ids])

    def readable_org(self, actor: Actor, org_id: UUID) -> Organization:
        """The organization whose keys `actor` asks to list (the policy asked first)."""
        authorize(actor, Command.READ_KEYS, org_id=org_id)
        return self.get_organization(org_id)

    @staticmethod
    def visible_keys(actor: Actor, org: Organization, keys: Iterable[ApiKey]) -> list[ApiKey]:
        """Of these keys of `org` (however read), those `actor` may see."""
        return [key for key in keys if sees(actor, KeyFacts.of(key, org))]

    def facts(self, key: ApiKey) -> KeyFacts:
        """What the access policy knows of `key` (under its organization's current plan)."""
        return KeyFacts.of(key, self.get_organization(key.org_id))

    # -- plumbing ------------------------------------------------------------------------

    def _get(self, cls: type[T], aggregate_id: UUID, what: str) -> T:
        try:
            aggregate: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"no such {what}") from None
        if not isinstance(aggregate, cls):
            raise NotFound(f"no such {what}")
        return aggregate

    def _update_org(
        self, org_id: UUID, actor: Actor, change: Callable[[Organization], Any]
    ) -> Organization:
        authorize(actor, Command.MANAGE_ORGANIZATION, org_id=org_id)

        def attempt() -> Organization:
            org = self.get_organization(org_id)
            change(org)
            self.save(org)
            return org

        return self.retrying(attempt)

    def acting(self, actor: Actor, org: Organization) -> Actor:
        """The actor as it stands now: a key as stored (revoked, rolled, its limits), not as
        it was when its request was authenticated. `org` is the one the command reads (the
        acting key's, unless the policy will refuse the command as another org's)."""
        if not isinstance(actor, KeyActor):
            return actor
        key = self.get_key(actor.key_id)
        own = org if org.id == key.org_id else self.get_organization(key.org_id)
        return key_actor(key, own, self.clock())

    def _update_key(
        self, key_id: UUID, actor: Actor, command: Command, change: Callable[[ApiKey], Any]
    ) -> ApiKey:
        def attempt() -> ApiKey:
            key = self.get_key(key_id)
            org = self.get_organization(key.org_id)
            authorize(self.acting(actor, org), command, key=KeyFacts.of(key, org))
            change(key)
            self.save(key)
            return key

        return self.retrying(attempt)

    def retrying(self, attempt: Callable[[], T]) -> T:
        """Run `attempt` again on a lost optimistic-concurrency race, from fresh state: the
        domain rules see the winner's change (a second revoke fails with KeyRevoked)."""
        for _ in range(COMMAND_ATTEMPTS - 1):
            try:
                return attempt()
            except IntegrityError:
                continue
        try:
            return attempt()
        except IntegrityError:
            raise Conflict("the key changed concurrently too many times; try again") from None
