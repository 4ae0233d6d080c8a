"""Keys under their organization's lifetime policy: refused when they break it; a roll that
revokes the old key once idle; the unused-key warning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.actors import OPERATOR, SYSTEM, Actor
from domain.api_key import ApiKey
from domain.errors import KeyRevoked, ValidationError
from domain.key_format import Environment, KeyType
from domain.lifetime_policy import ExpiryRequirement, LifetimePolicy, PolicyRule, PolicyViolation
from domain.organization import Organization
from domain.plans import Plan

PEPPER = b"a-server-side-pepper-of-32-bytes"
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def an_org(policy: LifetimePolicy | None = None) -> Organization:
    org = Organization.register("Acme", Plan.PRO, OPERATOR)
    if policy is not None:
        org.set_lifetime_policy(policy, OPERATOR)
    return org


def issue(
    org: Organization,
    *,
    env: Environment = Environment.LIVE,
    actor: Actor = OPERATOR,
    expires_at: datetime | None = None,
) -> ApiKey:
    key, _ = ApiKey.issue(
        org,
        name="backend",
        env=env,
        key_type=KeyType.SECRET,
        pepper=PEPPER,
        actor=actor,
        now=NOW,
        expires_at=expires_at,
    )
    return key


def test_an_org_keeps_its_policy_as_an_event_and_reads_it_back() -> None:
    policy = LifetimePolicy(90 * DAY, ExpiryRequirement.LIVE, 30 * DAY)
    org = an_org(policy)
    assert org.lifetime_policy == policy
    event = org.collect_events()[-1]
    assert isinstance(event, Organization.LifetimePolicySet)
    assert event.max_lifetime_seconds == 90 * 86400 and event.require_expiry == "live"


def test_setting_the_same_policy_again_records_nothing() -> None:
    org = an_org(LifetimePolicy(max_lifetime=90 * DAY))
    org.collect_events()
    org.set_lifetime_policy(LifetimePolicy(max_lifetime=90 * DAY), OPERATOR)
    assert org.collect_events() == []


def test_an_org_from_before_the_policy_has_none() -> None:
    org = an_org()
    assert org.lifetime_policy == LifetimePolicy()
    assert org.lifetime_policy_set_at is None


def test_an_org_remembers_when_its_policy_was_set() -> None:
    org = an_org(LifetimePolicy(max_lifetime=90 * DAY))
    assert org.lifetime_policy_set_at == org.modified_on


def test_a_policy_out_of_bounds_is_not_set() -> None:
    org = an_org()
    with pytest.raises(ValidationError, match="max_lifetime"):
        org.set_lifetime_policy(LifetimePolicy(max_lifetime=timedelta(minutes=5)), OPERATOR)
    assert org.lifetime_policy == LifetimePolicy()


def test_a_key_that_breaks_the_policy_is_not_issued() -> None:
    org = an_org(LifetimePolicy(max_lifetime=90 * DAY))
    with pytest.raises(PolicyViolation) as refused:
        issue(org, expires_at=NOW + 100 * DAY)
    assert refused.value.rule is PolicyRule.MAX_LIFETIME
    assert org.key_ids == []


def test_a_key_within_the_policy_is_issued() -> None:
    org = an_org(LifetimePolicy(max_lifetime=90 * DAY))
    assert issue(org, expires_at=NOW + 90 * DAY).expires_at == NOW + 90 * DAY


def test_the_systems_own_roll_of_a_leaked_key_is_not_held_to_the_policy() -> None:
    org = an_org()
    key = issue(org)
    org.set_lifetime_policy(LifetimePolicy(require_expiry=ExpiryRequirement.ALL), OPERATOR)
    with pytest.raises(PolicyViolation):
        key.roll(org, pepper=PEPPER, grace=DAY, actor=OPERATOR, now=NOW)
    successor, _ = key.roll(org, pepper=PEPPER, grace=DAY, actor=SYSTEM, now=NOW)
    assert successor.expires_at is None


def test_rolling_a_key_from_before_the_policy_takes_a_new_expiry_for_the_successor() -> None:
    org = an_org()
    key = issue(org)
    org.set_lifetime_policy(LifetimePolicy(max_lifetime=90 * DAY), OPERATOR)
    successor, _ = key.roll(
        org, pepper=PEPPER, grace=DAY, actor=OPERATOR, now=NOW, expires_at=NOW + 30 * DAY
    )
    assert successor.expires_at == NOW + 30 * DAY
    assert key.expires_at == NOW + DAY


def test_a_roll_can_arrange_for_the_old_key_to_go_once_idle() -> None:
    org = an_org()
    key = issue(org)
    key.roll(
        org,
        pepper=PEPPER,
        grace=DAY,
        actor=OPERATOR,
        now=NOW,
        revoke_when_idle=timedelta(minutes=15),
    )
    assert key.idle_revocation is not None
    assert key.idle_revocation[1] == timedelta(minutes=15)
    assert isinstance(key.collect_events()[-1], ApiKey.IdleRevocationArranged)


@pytest.mark.parametrize("idle", [timedelta(seconds=59), DAY + timedelta(seconds=1)])
def test_the_idle_time_must_lie_within_a_minute_and_the_grace(idle: timedelta) -> None:
    org = an_org()
    key = issue(org)
    with pytest.raises(ValidationError, match="revoke_when_idle"):
        key.roll(org, pepper=PEPPER, grace=DAY, actor=OPERATOR, now=NOW, revoke_when_idle=idle)
    assert key.successor_id is None


def test_an_unused_key_is_warned_with_the_time_it_goes() -> None:
    key = issue(an_org())
    key.warn_unused(NOW + 7 * DAY, SYSTEM)
    assert key.unused_warning is not None and key.unused_warning.revoke_at == NOW + 7 * DAY
    event = key.collect_events()[-1]
    assert isinstance(event, ApiKey.UnusedWarned) and event.actor == SYSTEM.name


def test_a_revoked_key_is_not_warned() -> None:
    key = issue(an_org())
    key.revoke(OPERATOR, "done")
    with pytest.raises(KeyRevoked):
        key.warn_unused(NOW + 7 * DAY, SYSTEM)
