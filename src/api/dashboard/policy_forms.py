"""Settings > Key policy: what its form says, read into a `LifetimePolicy`, and what it shows.

The form reader keeps what was typed (a refused form is shown again as it was sent); the rules'
bounds are `domain.lifetime_policy`'s, which refuse with a `ValidationError`. Who may change
the policy is the access policy's (`allows`).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import msgspec

from api.dashboard.forms import form_text
from api.dashboard.views import View
from domain.errors import ValidationError
from domain.lifetime_policy import (
    ExpiryRequirement,
    LifetimePolicy,
    describe,
)

#: What each choice of "require an expiry" means, in the order the form lists them.
EXPIRY_REQUIREMENTS = (
    (ExpiryRequirement.NONE.value, "no: keys may live until revoked"),
    (ExpiryRequirement.LIVE.value, "on live keys"),
    (ExpiryRequirement.ALL.value, "on all keys (live and test)"),
)
#: A rule's field: days, or a number of hours (`h`) or minutes (`m`); empty is off.
_DURATION = re.compile(r"(?:(\d{1,6}) *([dhm]?))?")
_UNITS = {"": "days", "d": "days", "h": "hours", "m": "minutes"}
_REQUIREMENT_TEXT = {
    ExpiryRequirement.NONE: "not required",
    ExpiryRequirement.LIVE: "required on live keys",
    ExpiryRequirement.ALL: "required on all keys",
}


class PolicyForm(msgspec.Struct, frozen=True, kw_only=True):
    """The policy form as sent (shown again with `error` when refused); "" is a rule off."""

    max_lifetime_days: str = ""
    require_expiry: str = ExpiryRequirement.NONE.value
    revoke_unused_after_days: str = ""
    error: str | None = None


class Rule(msgspec.Struct, frozen=True):
    """One rule of the policy as the page states it now."""

    name: str
    value: str
    on: bool


class KeyPolicyPage(View, frozen=True, kw_only=True):
    """Settings > Key policy: the organization's policy and, for those who may, its form."""

    rules: tuple[Rule, ...]
    empty: bool
    may_set: bool
    form: PolicyForm
    requirements: tuple[tuple[str, str], ...] = EXPIRY_REQUIREMENTS


def policy_form(form: Any) -> PolicyForm:
    """The policy form's fields, as typed (judged by `policy_of`)."""
    return PolicyForm(
        max_lifetime_days=form_text(form, "max_lifetime_days").strip()[:40],
        require_expiry=form_text(form, "require_expiry", ExpiryRequirement.NONE.value),
        revoke_unused_after_days=form_text(form, "revoke_unused_after_days").strip()[:40],
    )


def _days(text: str, label: str) -> timedelta | None:
    """A field of days ("" or 0: off); `12h` or `90m` is taken too, as the API takes it (a
    policy set there may be shorter than a day, and is shown so)."""
    found = _DURATION.fullmatch(text.lower())
    if found is None:
        raise ValidationError(
            f"{label}: write a whole number of days, like 90, or leave it empty for off"
        )
    if not found[1]:
        return None
    return timedelta(**{_UNITS[found[2]]: int(found[1])}) or None


def policy_of(asked: PolicyForm) -> LifetimePolicy:
    """The policy the form asks for; ValidationError naming what is wrong."""
    try:
        requirement = ExpiryRequirement(asked.require_expiry)
    except ValueError:
        raise ValidationError("require an expiry: choose no, live keys or all keys") from None
    return LifetimePolicy(
        max_lifetime=_days(asked.max_lifetime_days, "max lifetime"),
        require_expiry=requirement,
        revoke_unused_after=_days(asked.revoke_unused_after_days, "revoke unused keys after"),
    )


def _field(duration: timedelta | None) -> str:
    """A rule's duration as the form shows it: whole days as a number, else as `12h`."""
    if duration is None:
        return ""
    if duration % timedelta(days=1) == timedelta(0):
        return str(duration.days)
    hours, rest = divmod(int(duration.total_seconds()), 3600)
    return f"{hours}h" if not rest else f"{int(duration.total_seconds()) // 60}m"


def form_of(policy: LifetimePolicy) -> PolicyForm:
    """The form filled with the policy in force."""
    return PolicyForm(
        max_lifetime_days=_field(policy.max_lifetime),
        require_expiry=policy.require_expiry.value,
        revoke_unused_after_days=_field(policy.revoke_unused_after),
    )


def rules_of(policy: LifetimePolicy) -> tuple[Rule, ...]:
    """The policy's three rules, in words."""
    lifetime, unused = policy.max_lifetime, policy.revoke_unused_after
    requirement = policy.require_expiry
    if lifetime is not None and requirement is not ExpiryRequirement.ALL:
        expiry = "required on all keys (the max lifetime asks it)"
    else:
        expiry = _REQUIREMENT_TEXT[requirement]
    return (
        Rule(
            "Max lifetime", "off" if lifetime is None else describe(lifetime), lifetime is not None
        ),
        Rule("Expiry", expiry, lifetime is not None or requirement is not ExpiryRequirement.NONE),
        Rule(
            "Revoke unused keys after", "off" if unused is None else describe(unused), bool(unused)
        ),
    )


def policy_page(
    policy: LifetimePolicy, *, may_set: bool, form: PolicyForm | None = None
) -> KeyPolicyPage:
    """Settings > Key policy showing `policy`, with the form (as typed, when refused)."""
    return KeyPolicyPage(
        rules=rules_of(policy),
        empty=policy.is_empty,
        may_set=may_set,
        form=form or form_of(policy),
    )
