"""An organization's key-lifetime policy: what it refuses, and when it warns and revokes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import ValidationError
from domain.key_format import Environment
from domain.lifetime_policy import (
    ExpiryRequirement,
    LifetimePolicy,
    PolicyRule,
    UnusedWarning,
    describe,
    findings,
    idle_revocation_due,
    last_active,
    pending_unused_revocation,
    unused_verdict,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
LIVE, TEST = Environment.LIVE, Environment.TEST


def test_the_default_policy_asks_nothing() -> None:
    policy = LifetimePolicy()
    assert policy.is_empty
    assert policy.violation(LIVE, None, NOW) is None
    assert unused_verdict(policy, NOW - 1000 * DAY, None, None, NOW) is None


def test_a_max_lifetime_refuses_a_key_that_never_expires_naming_the_rule() -> None:
    policy = LifetimePolicy(max_lifetime=90 * DAY)
    found = policy.violation(TEST, None, NOW)
    assert found is not None and found.rule is PolicyRule.MAX_LIFETIME
    assert found.code == "policy_violation"
    assert "90 days" in found.message and "2030-04-01T00:00:00+00:00" in found.message


def test_a_max_lifetime_refuses_a_key_expiring_later_and_takes_one_expiring_sooner() -> None:
    policy = LifetimePolicy(max_lifetime=90 * DAY)
    late = policy.violation(LIVE, NOW + 91 * DAY, NOW)
    assert late is not None and late.rule is PolicyRule.MAX_LIFETIME
    assert policy.violation(LIVE, NOW + 90 * DAY, NOW) is None


def test_requiring_an_expiry_on_live_keys_leaves_test_keys_free() -> None:
    policy = LifetimePolicy(require_expiry=ExpiryRequirement.LIVE)
    found = policy.violation(LIVE, None, NOW)
    assert found is not None and found.rule is PolicyRule.REQUIRE_EXPIRY
    assert "live keys" in found.message
    assert policy.violation(TEST, None, NOW) is None
    assert policy.violation(LIVE, NOW + 3650 * DAY, NOW) is None


def test_requiring_an_expiry_on_all_keys_covers_test_keys() -> None:
    policy = LifetimePolicy(require_expiry=ExpiryRequirement.ALL)
    found = policy.violation(TEST, None, NOW)
    assert found is not None and found.rule is PolicyRule.REQUIRE_EXPIRY


def test_refuse_raises_the_violation() -> None:
    with pytest.raises(Exception, match="policy requires an expiry") as raised:
        LifetimePolicy(require_expiry=ExpiryRequirement.ALL).refuse(LIVE, None, NOW)
    assert getattr(raised.value, "rule", None) is PolicyRule.REQUIRE_EXPIRY


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_lifetime", timedelta(minutes=59)),
        ("max_lifetime", 3651 * DAY),
        ("revoke_unused_after", timedelta(hours=23)),
        ("revoke_unused_after", 3651 * DAY),
    ],
)
def test_durations_out_of_bounds_are_refused(field: str, value: timedelta) -> None:
    with pytest.raises(ValidationError, match=field):
        LifetimePolicy(**{field: value}).check()  # type: ignore[arg-type]


def test_a_stored_policy_reads_back_whatever_the_bounds() -> None:
    stored = LifetimePolicy.of_seconds(60, "none", None)
    assert stored.max_lifetime == timedelta(minutes=1)


def test_a_policy_round_trips_through_its_stored_form() -> None:
    policy = LifetimePolicy(90 * DAY, ExpiryRequirement.LIVE, 30 * DAY)
    assert LifetimePolicy.of_seconds(**policy.as_seconds()) == policy
    assert LifetimePolicy.of_seconds(**LifetimePolicy().as_seconds()) == LifetimePolicy()


def test_durations_read_in_their_largest_whole_unit() -> None:
    assert describe(90 * DAY) == "90 days"
    assert describe(timedelta(hours=1)) == "1 hour"
    assert describe(timedelta(minutes=90)) == "90 minutes"


# -- unused keys ---------------------------------------------------------------------------

UNUSED = LifetimePolicy(revoke_unused_after=90 * DAY)


def test_an_unused_key_is_left_alone_until_a_week_before_it_is_due() -> None:
    assert unused_verdict(UNUSED, NOW - 82 * DAY, None, None, NOW) is None


def test_an_unused_key_is_warned_a_week_before_it_is_due() -> None:
    verdict = unused_verdict(UNUSED, NOW - 83 * DAY, None, None, NOW)
    assert verdict is not None and not verdict.revoke
    assert verdict.revoke_at == NOW + 7 * DAY


def warned(at: datetime, revoke_at: datetime) -> UnusedWarning:
    return UnusedWarning(given_at=at, revoke_at=revoke_at)


def test_a_key_long_overdue_is_warned_first_and_revoked_only_a_week_later() -> None:
    idle_since = NOW - 400 * DAY
    first = unused_verdict(UNUSED, idle_since, None, None, NOW)
    assert first is not None and not first.revoke and first.revoke_at == NOW + 7 * DAY
    warning = warned(NOW, first.revoke_at)
    assert unused_verdict(UNUSED, idle_since, warning, None, NOW + 6 * DAY) is None
    revoked = unused_verdict(UNUSED, idle_since, warning, None, NOW + 7 * DAY)
    assert revoked is not None and revoked.revoke


def test_a_use_after_the_warning_cancels_it() -> None:
    warning = warned(NOW, NOW + 7 * DAY)
    used_again = NOW + DAY
    assert pending_unused_revocation(UNUSED, used_again, warning, None) is None
    assert unused_verdict(UNUSED, used_again, warning, None, NOW + 8 * DAY) is None


def test_a_policy_set_after_the_warning_makes_it_stale() -> None:
    warning = warned(NOW, NOW + 7 * DAY)
    idle_since = NOW - 400 * DAY
    assert pending_unused_revocation(UNUSED, idle_since, warning, NOW - DAY) == NOW + 7 * DAY
    assert pending_unused_revocation(UNUSED, idle_since, warning, NOW + DAY) is None
    again = unused_verdict(UNUSED, idle_since, warning, NOW + DAY, NOW + 60 * DAY)
    assert again is not None and not again.revoke, "warned anew"


def test_a_rule_turned_off_after_the_warning_revokes_nothing() -> None:
    warning = warned(NOW, NOW + 7 * DAY)
    assert unused_verdict(LifetimePolicy(), NOW - 400 * DAY, warning, None, NOW + 30 * DAY) is None


def test_a_short_rule_warns_half_its_length_before() -> None:
    policy = LifetimePolicy(revoke_unused_after=2 * DAY)
    verdict = unused_verdict(policy, NOW - DAY, None, None, NOW)
    assert verdict is not None and verdict.revoke_at == NOW + DAY


def test_a_key_is_last_active_at_its_last_use_or_its_issue() -> None:
    assert last_active(NOW, None) == NOW
    assert last_active(NOW, NOW + DAY) == NOW + DAY
    assert last_active(NOW, NOW - DAY) == NOW


# -- rolled keys revoked once idle ---------------------------------------------------------


def test_a_rolled_key_goes_once_unused_for_its_idle_time_since_the_roll() -> None:
    arranged = (NOW, timedelta(minutes=15))
    assert not idle_revocation_due(arranged, None, NOW + timedelta(minutes=14))
    assert idle_revocation_due(arranged, None, NOW + timedelta(minutes=15))


def test_a_use_during_the_grace_keeps_a_rolled_key_longer() -> None:
    arranged = (NOW, timedelta(minutes=15))
    used = NOW + timedelta(minutes=10)
    assert not idle_revocation_due(arranged, used, NOW + timedelta(minutes=20))
    assert idle_revocation_due(arranged, used, NOW + timedelta(minutes=25))


def test_a_use_before_the_roll_does_not_shorten_the_idle_time() -> None:
    arranged = (NOW, timedelta(minutes=15))
    assert not idle_revocation_due(arranged, NOW - DAY, NOW + timedelta(minutes=5))


def test_a_key_without_the_arrangement_is_never_revoked_for_idleness() -> None:
    assert not idle_revocation_due(None, None, NOW + 365 * DAY)


# -- what a key breaks, for people -----------------------------------------------------------


def test_a_key_issued_before_the_policy_shows_what_it_breaks() -> None:
    policy = LifetimePolicy(90 * DAY, ExpiryRequirement.LIVE, 90 * DAY)
    found = findings(
        policy,
        env=LIVE,
        issued_at=NOW - 85 * DAY,
        expires_at=None,
        active_at=NOW - 85 * DAY,
        warning=None,
        policy_set_at=None,
        now=NOW,
    )
    assert [f.rule for f in found] == [PolicyRule.MAX_LIFETIME, PolicyRule.REVOKE_UNUSED_AFTER]
    assert "never expires" in found[0].text
    assert found[1].text == "unused for 85 days: to be revoked on 2030-01-08 unless used"


def test_a_key_within_the_policy_shows_nothing() -> None:
    policy = LifetimePolicy(90 * DAY, ExpiryRequirement.LIVE, 90 * DAY)
    found = findings(
        policy,
        env=LIVE,
        issued_at=NOW - DAY,
        expires_at=NOW + 80 * DAY,
        active_at=NOW - DAY,
        warning=None,
        policy_set_at=None,
        now=NOW,
    )
    assert found == []


def test_a_stale_warning_is_not_shown_as_the_revocation_date() -> None:
    found = findings(
        UNUSED,
        env=LIVE,
        issued_at=NOW - 400 * DAY,
        expires_at=None,
        active_at=NOW - 85 * DAY,
        warning=warned(NOW - 107 * DAY, NOW - 100 * DAY),
        policy_set_at=None,
        now=NOW,
    )
    assert found[-1].text.endswith("to be revoked on 2030-01-08 unless used")
