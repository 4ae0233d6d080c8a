"""An organization's key-lifetime policy: how long its keys may live, and how long unused.

Three rules, each off until an owner or admin sets it (docs/adr/0026):

- `max_lifetime`: every key issued (created, or a roll's successor) expires within this long;
  a key without an expiry breaks it.
- `require_expiry`: which keys must have an expiry at all: `none`, `live` or `all`.
- `revoke_unused_after`: a key not used for this long is revoked by the system, after a
  warning (`ApiKey.UnusedWarned`) at least `UNUSED_WARNING_LEAD` before.

Issuing a key that breaks a rule raises `PolicyViolation`, naming the rule; keys issued before
the policy are not touched, only shown with what they break (`findings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from domain.errors import DomainError, ValidationError
from domain.key_format import Environment

#: The bounds of `max_lifetime` and `revoke_unused_after`.
MIN_LIFETIME = timedelta(hours=1)
MIN_UNUSED = timedelta(days=1)
MAX_DURATION = timedelta(days=3650)
#: How long before revoking an unused key it is warned of (shorter when the rule is shorter).
UNUSED_WARNING_LEAD = timedelta(days=7)
#: The revocation reason of a key the unused-key sweep revoked.
UNUSED_REASON = "unused"


class ExpiryRequirement(StrEnum):
    """Which keys must have an expiry."""

    NONE = "none"
    LIVE = "live"
    ALL = "all"


class PolicyRule(StrEnum):
    """A rule of the policy, as a violation names it."""

    MAX_LIFETIME = "max_lifetime"
    REQUIRE_EXPIRY = "require_expiry"
    REVOKE_UNUSED_AFTER = "revoke_unused_after"


class PolicyViolation(DomainError):
    """A key would break the organization's lifetime policy; `rule` says which rule."""

    code = "policy_violation"

    def __init__(self, rule: PolicyRule, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class LifetimePolicy:
    """What an organization asks of its keys' lifetimes; the default asks nothing."""

    max_lifetime: timedelta | None = None
    require_expiry: ExpiryRequirement = ExpiryRequirement.NONE
    revoke_unused_after: timedelta | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "require_expiry", ExpiryRequirement(self.require_expiry))

    def check(self) -> LifetimePolicy:
        """The policy, if its durations are within bounds (ValidationError otherwise).

        Asked when a policy is set, not when one is read back: a stored policy stays readable
        whatever the bounds become."""
        _check_bounds(self.max_lifetime, MIN_LIFETIME, "max_lifetime")
        _check_bounds(self.revoke_unused_after, MIN_UNUSED, "revoke_unused_after")
        return self

    @classmethod
    def of_seconds(
        cls,
        max_lifetime_seconds: int | None,
        require_expiry: str,
        revoke_unused_after_seconds: int | None,
    ) -> LifetimePolicy:
        """The policy as an event stores it (durations in seconds; None: the rule is off)."""
        return cls(
            _duration(max_lifetime_seconds),
            ExpiryRequirement(require_expiry),
            _duration(revoke_unused_after_seconds),
        )

    def as_seconds(self) -> dict[str, Any]:
        """The policy as an event stores it and the API shows it (`of_seconds`' inverse)."""
        return {
            "max_lifetime_seconds": _seconds(self.max_lifetime),
            "require_expiry": self.require_expiry.value,
            "revoke_unused_after_seconds": _seconds(self.revoke_unused_after),
        }

    @property
    def is_empty(self) -> bool:
        return self == LifetimePolicy()

    def expiry_required(self, env: Environment) -> bool:
        """Whether a key of `env` must have an expiry under this policy."""
        if self.max_lifetime is not None or self.require_expiry is ExpiryRequirement.ALL:
            return True
        return self.require_expiry is ExpiryRequirement.LIVE and env == Environment.LIVE

    def latest_expiry(self, issued_at: datetime) -> datetime | None:
        """The latest expiry a key issued at `issued_at` may have (None: no limit)."""
        return None if self.max_lifetime is None else issued_at + self.max_lifetime

    def violation(
        self, env: Environment, expires_at: datetime | None, issued_at: datetime
    ) -> PolicyViolation | None:
        """What a key of `env` issued at `issued_at`, expiring at `expires_at`, breaks."""
        latest = self.latest_expiry(issued_at)
        if expires_at is None and self.max_lifetime is not None:
            return PolicyViolation(
                PolicyRule.MAX_LIFETIME,
                f"the organization's policy limits keys to {describe(self.max_lifetime)}: "
                f"give the key an expiry (expires_at) no later than {_iso(latest)}",
            )
        if expires_at is None and self.expiry_required(env):
            which = "every key" if self.require_expiry is ExpiryRequirement.ALL else "live keys"
            return PolicyViolation(
                PolicyRule.REQUIRE_EXPIRY,
                f"the organization's policy requires an expiry on {which}: give the key one "
                "(expires_at)",
            )
        if latest is not None and expires_at is not None and expires_at > latest:
            assert self.max_lifetime is not None
            return PolicyViolation(
                PolicyRule.MAX_LIFETIME,
                f"the organization's policy limits keys to {describe(self.max_lifetime)}: "
                f"give the key an expiry (expires_at) no later than {_iso(latest)}",
            )
        return None

    def refuse(self, env: Environment, expires_at: datetime | None, issued_at: datetime) -> None:
        """Raise the violation, if a key so issued breaks the policy."""
        found = self.violation(env, expires_at, issued_at)
        if found is not None:
            raise found

    def unused_since(self, last_active: datetime) -> datetime | None:
        """When a key last active at `last_active` is due to be revoked unused (None: never)."""
        if self.revoke_unused_after is None:
            return None
        return last_active + self.revoke_unused_after

    def warning_lead(self) -> timedelta:
        """How long before an unused key's revocation its warning comes."""
        if self.revoke_unused_after is None:
            return UNUSED_WARNING_LEAD
        return min(UNUSED_WARNING_LEAD, self.revoke_unused_after / 2)


def _seconds(duration: timedelta | None) -> int | None:
    return None if duration is None else int(duration.total_seconds())


def _duration(seconds: int | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


def _check_bounds(value: timedelta | None, least: timedelta, name: str) -> None:
    if value is not None and not least <= value <= MAX_DURATION:
        raise ValidationError(
            f"{name} must be from {describe(least)} to {describe(MAX_DURATION)}, or off"
        )


def describe(duration: timedelta) -> str:
    """A duration in the largest whole unit that states it (90 days, 12 hours, 30 minutes)."""
    seconds = int(duration.total_seconds())
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} seconds"


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat(timespec="seconds")


class UnusedWarning(NamedTuple):
    """The sweep's warning that an unused key goes at `revoke_at` (`ApiKey.UnusedWarned`)."""

    given_at: datetime
    revoke_at: datetime


class UnusedVerdict(NamedTuple):
    """What the unused-key sweep does to one key now: warn it, or revoke it."""

    revoke: bool  # False: warn (record `UnusedWarned`) that it will be revoked at `revoke_at`
    revoke_at: datetime


def last_active(issued_at: datetime, last_used: datetime | None) -> datetime:
    """When a key was last used, or issued when it was never used since."""
    return issued_at if last_used is None else max(issued_at, last_used)


def unused_verdict(
    policy: LifetimePolicy,
    active_at: datetime,
    warning: UnusedWarning | None,
    policy_set_at: datetime | None,
    now: datetime,
) -> UnusedVerdict | None:
    """Warn or revoke a key last active (used, or issued) at `active_at`, or leave it.

    A key is warned `warning_lead` before it is due and revoked only once warned and its
    warning's time has come; a warning stops counting once the key is used or the policy is
    set again (`pending_unused_revocation`), and the key is then warned again before it goes.
    """
    due = policy.unused_since(active_at)
    if due is None:
        return None
    pending = pending_unused_revocation(policy, active_at, warning, policy_set_at)
    if pending is not None:
        return UnusedVerdict(True, pending) if now >= pending else None
    if now < due - policy.warning_lead():
        return None
    return UnusedVerdict(False, max(due, now + policy.warning_lead()))


def pending_unused_revocation(
    policy: LifetimePolicy,
    active_at: datetime,
    warning: UnusedWarning | None,
    policy_set_at: datetime | None,
) -> datetime | None:
    """When a warned key goes, while its warning holds: given after the key's last use and
    after the policy was last set (a rule turned off and on again, or changed, warns anew)."""
    if policy.revoke_unused_after is None or warning is None:
        return None
    if warning.given_at < active_at:
        return None
    if policy_set_at is not None and warning.given_at < policy_set_at:
        return None
    return warning.revoke_at


def idle_revocation_due(
    idle_revocation: tuple[datetime, timedelta] | None, last_used: datetime | None, now: datetime
) -> bool:
    """Whether a rolled key arranged to go when idle has been unused long enough since its roll."""
    if idle_revocation is None:
        return False
    rolled_at, idle_for = idle_revocation
    return now - last_active(rolled_at, last_used) >= idle_for


class Finding(NamedTuple):
    """What a key breaks of its organization's policy (or is about to), for people to read."""

    rule: PolicyRule
    text: str


def findings(
    policy: LifetimePolicy,
    *,
    env: Environment,
    issued_at: datetime,
    expires_at: datetime | None,
    active_at: datetime,
    warning: UnusedWarning | None,
    policy_set_at: datetime | None,
    now: datetime,
) -> list[Finding]:
    """Each rule an active key breaks, or will soon (its unused revocation), in words."""
    found: list[Finding] = []
    broken = policy.violation(env, expires_at, issued_at)
    if broken is not None:
        issued_text = "issued before the policy: "
        if expires_at is None:
            found.append(Finding(broken.rule, issued_text + "it never expires"))
        else:
            found.append(Finding(broken.rule, issued_text + "it lives longer than allowed"))
    due = policy.unused_since(active_at)
    if due is not None and now >= due - policy.warning_lead():
        idle_days = (now - active_at).days
        # Not warned yet (or warned before a use): the sweep's warning will say this date.
        pending = pending_unused_revocation(policy, active_at, warning, policy_set_at)
        at = pending or max(due, now + policy.warning_lead())
        found.append(
            Finding(
                PolicyRule.REVOKE_UNUSED_AFTER,
                f"unused for {idle_days} day{'' if idle_days == 1 else 's'}: "
                f"to be revoked on {at.date().isoformat()} unless used",
            )
        )
    return found
