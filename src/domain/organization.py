"""Organization: owns API keys, and its plan decides their permissions and rate limit."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor
from domain.errors import PlanDoesNotAllow, ValidationError
from domain.lifetime_policy import LifetimePolicy
from domain.naming import clean_name
from domain.plans import (
    DEFAULT_RATE_LIMIT_PER_MINUTE,
    MAX_CUSTOM_RATE_LIMIT_PER_MINUTE,
    PLAN_PERMISSIONS,
    Permission,
    Plan,
)


class LeakPolicy(StrEnum):
    """What happens to a key reported leaked: revoked at once, or rolled (short grace)."""

    REVOKE = "revoke"
    ROLL = "roll"


def parse_leak_policy(text: str) -> LeakPolicy:
    try:
        return LeakPolicy(text)
    except ValueError:
        raise ValidationError(
            f"unknown leak policy {text[:40]!r}: expected revoke or roll"
        ) from None


class Organization(Aggregate):
    """A customer of Icodrip; every key belongs to exactly one."""

    class Registered(Aggregate.Created):
        name: str
        plan: Plan
        actor: str

    class PlanChanged(Aggregate.Event):
        plan: Plan
        previous: Plan
        actor: str

    class RateLimitSet(Aggregate.Event):
        requests_per_minute: int
        actor: str

    class RateLimitCleared(Aggregate.Event):
        actor: str

    class KeyAdded(Aggregate.Event):
        key_id: UUID
        actor: str

    class LeakPolicySet(Aggregate.Event):
        policy: str
        actor: str

    class LifetimePolicySet(Aggregate.Event):
        """The whole policy as it now stands (durations in seconds; None: the rule is off)."""

        max_lifetime_seconds: int | None
        require_expiry: str
        revoke_unused_after_seconds: int | None
        actor: str

    class WebhookAdded(Aggregate.Event):
        webhook_id: UUID
        actor: str

    class WebhookRemoved(Aggregate.Event):
        webhook_id: UUID
        actor: str

    @event(Registered)
    def __init__(self, name: str, plan: Plan, actor: str) -> None:
        self.name = name
        self._plan = Plan(plan)
        self.custom_rate_limit: int | None = None
        self.key_ids: list[UUID] = []
        self.registered_by = actor

    @classmethod
    def register(cls, name: str, plan: Plan, actor: Actor) -> Organization:
        """A new organization on `plan`."""
        return cls(name=clean_name(name, "organization name"), plan=plan, actor=actor.name)

    @property
    def plan(self) -> Plan:
        """The org's plan, always a `Plan`.

        A snapshot keeps the aggregate's attributes as JSON, where the enum becomes plain
        text; coercing here means an org restored from a snapshot behaves like one replayed
        from its events (for example `plan is Plan.AGENCY` stays true).
        """
        return Plan(self._plan)

    @property
    def permissions(self) -> frozenset[Permission]:
        """What every key of this org may do at most."""
        return PLAN_PERMISSIONS[self.plan]

    @property
    def rate_limit_per_minute(self) -> int:
        """Requests per minute per key: the custom limit on agency, else the default."""
        if self.plan is Plan.AGENCY and self.custom_rate_limit is not None:
            return self.custom_rate_limit
        return DEFAULT_RATE_LIMIT_PER_MINUTE

    def change_plan(self, plan: Plan, actor: Actor) -> None:
        """Move to another plan (a no-op when it is already on it)."""
        plan = Plan(plan)
        if plan is not self.plan:
            self._plan_changed(plan=plan, previous=self.plan, actor=actor.name)

    @event(PlanChanged)
    def _plan_changed(self, plan: Plan, previous: Plan, actor: str) -> None:
        self._plan = Plan(plan)
        if self.plan is not Plan.AGENCY:
            self.custom_rate_limit = None

    def set_rate_limit(self, requests_per_minute: int, actor: Actor) -> None:
        """A custom per-key limit; only the agency plan carries one."""
        if self.plan is not Plan.AGENCY:
            raise PlanDoesNotAllow(
                f"custom rate limits need the agency plan (this org is on {self.plan.value})"
            )
        if not 1 <= requests_per_minute <= MAX_CUSTOM_RATE_LIMIT_PER_MINUTE:
            raise ValidationError(
                f"rate limit must be 1 to {MAX_CUSTOM_RATE_LIMIT_PER_MINUTE} requests per minute"
            )
        self._rate_limit_set(requests_per_minute=requests_per_minute, actor=actor.name)

    @event(RateLimitSet)
    def _rate_limit_set(self, requests_per_minute: int, actor: str) -> None:
        self.custom_rate_limit = requests_per_minute

    def clear_rate_limit(self, actor: Actor) -> None:
        """Back to the plan's default limit."""
        if self.custom_rate_limit is not None:
            self._rate_limit_cleared(actor=actor.name)

    @event(RateLimitCleared)
    def _rate_limit_cleared(self, actor: str) -> None:
        self.custom_rate_limit = None

    @property
    def leak_policy(self) -> LeakPolicy:
        """revoke (default) or roll; an org from before the setting (or a snapshot) revokes."""
        return LeakPolicy(getattr(self, "_leak_policy", LeakPolicy.REVOKE))

    def set_leak_policy(self, policy: LeakPolicy, actor: Actor) -> None:
        """Choose what a leak report does to this org's keys (a no-op when unchanged)."""
        policy = LeakPolicy(policy)
        if policy is not self.leak_policy:
            self._leak_policy_set(policy=policy.value, actor=actor.name)

    @event(LeakPolicySet)
    def _leak_policy_set(self, policy: str, actor: str) -> None:
        self._leak_policy = LeakPolicy(policy)

    @property
    def lifetime_policy(self) -> LifetimePolicy:
        """The key-lifetime policy; an org from before the setting (or a snapshot) has none."""
        stored = getattr(self, "_lifetime_policy", None)
        if not stored:
            return LifetimePolicy()
        return LifetimePolicy.of_seconds(
            stored["max_lifetime_seconds"],
            stored["require_expiry"],
            stored["revoke_unused_after_seconds"],
        )

    @property
    def lifetime_policy_set_at(self) -> datetime | None:
        """When the key-lifetime policy was last set (None: never)."""
        return getattr(self, "_lifetime_policy_set_at", None)

    def set_lifetime_policy(self, policy: LifetimePolicy, actor: Actor) -> None:
        """Replace the key-lifetime policy (a no-op when unchanged); keys already issued stay."""
        if policy.check() != self.lifetime_policy:
            self._lifetime_policy_set(**policy.as_seconds(), actor=actor.name)

    @event(LifetimePolicySet)
    def _lifetime_policy_set(
        self,
        max_lifetime_seconds: int | None,
        require_expiry: str,
        revoke_unused_after_seconds: int | None,
        actor: str,
        timestamp: datetime | None = None,
    ) -> None:
        # Kept as plain JSON values, as the event holds them (a snapshot keeps them so too),
        # and not checked again: what was stored reads back whatever the bounds become.
        self._lifetime_policy = {
            "max_lifetime_seconds": max_lifetime_seconds,
            "require_expiry": require_expiry,
            "revoke_unused_after_seconds": revoke_unused_after_seconds,
        }
        self._lifetime_policy_set_at = timestamp

    def add_key(self, key_id: UUID, actor: Actor) -> None:
        """Record a new key as this org's (the key itself holds its details)."""
        self._key_added(key_id=key_id, actor=actor.name)

    @event(KeyAdded)
    def _key_added(self, key_id: UUID, actor: str) -> None:
        self.key_ids.append(key_id)

    @property
    def webhook_ids(self) -> list[UUID]:
        """Every webhook endpoint the org ever had, oldest first (deleted ones included)."""
        return list(getattr(self, "_webhook_ids", []))

    @property
    def live_webhook_ids(self) -> list[UUID]:
        """The org's webhook endpoints not deleted, oldest first."""
        removed = set(getattr(self, "_removed_webhook_ids", []))
        return [i for i in self.webhook_ids if i not in removed]

    def add_webhook(self, webhook_id: UUID, actor: Actor) -> None:
        """Record a new webhook endpoint as this org's."""
        self._webhook_added(webhook_id=webhook_id, actor=actor.name)

    @event(WebhookAdded)
    def _webhook_added(self, webhook_id: UUID, actor: str) -> None:
        # An org stored before webhooks existed (or its snapshot) has no list yet.
        self._webhook_ids = [*getattr(self, "_webhook_ids", []), webhook_id]

    def remove_webhook(self, webhook_id: UUID, actor: Actor) -> None:
        """Record that one of the org's webhook endpoints was deleted."""
        self._webhook_removed(webhook_id=webhook_id, actor=actor.name)

    @event(WebhookRemoved)
    def _webhook_removed(self, webhook_id: UUID, actor: str) -> None:
        self._removed_webhook_ids = [*getattr(self, "_removed_webhook_ids", []), webhook_id]
