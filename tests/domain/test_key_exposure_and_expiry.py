"""ApiKey's issue-6 rules: IP allowlists, exposure flags, expiry by the system; org leak policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.actors import OPERATOR, SYSTEM
from domain.api_key import ApiKey
from domain.errors import KeyRevoked, ValidationError
from domain.key_format import Environment, KeyType
from domain.key_networks import MAX_ALLOWED_IPS
from domain.key_states import EXPIRED_AFTER_GRACE, EXPIRED_AT_EXPIRY, ExposureSource, KeyStatus
from domain.organization import LeakPolicy, Organization, parse_leak_policy
from domain.plans import Plan

PEPPER = b"a-server-side-pepper-of-32-bytes"
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def an_org() -> Organization:
    return Organization.register("Acme", Plan.PRO, OPERATOR)


def issue(org: Organization | None = None, **options: object) -> ApiKey:
    key, _ = ApiKey.issue(
        org or an_org(),
        name="billing",
        env=Environment.LIVE,
        key_type=options.pop("key_type", KeyType.SECRET),  # type: ignore[arg-type]
        pepper=PEPPER,
        actor=OPERATOR,
        now=NOW,
        **options,  # type: ignore[arg-type]
    )
    return key


def replayed(key: ApiKey) -> ApiKey:
    copy = None
    for event in key.collect_events():
        copy = event.mutate(copy)
    assert isinstance(copy, ApiKey)
    return copy


# -- IP allowlist ----------------------------------------------------------------------------


def test_an_ip_allowlist_given_at_issue_is_kept_in_canonical_cidr_form() -> None:
    key = issue(allowed_ips=("203.0.113.7", "10.1.2.3/8", "2001:db8::1/32"))
    assert key.allowed_ips == ["10.0.0.0/8", "2001:db8::/32", "203.0.113.7/32"]


def test_the_ip_allowlist_survives_replay_from_events() -> None:
    key = issue(allowed_ips=("203.0.113.0/24",))
    assert replayed(key).allowed_ips == ["203.0.113.0/24"]


def test_a_malformed_cidr_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="CIDR"):
        issue(allowed_ips=("203.0.113.0/33",))


def test_too_many_networks_are_refused() -> None:
    many = tuple(f"10.0.{i // 256}.{i % 256}" for i in range(MAX_ALLOWED_IPS + 1))
    with pytest.raises(ValidationError, match="at most"):
        issue(allowed_ips=many)


def test_a_public_key_cannot_carry_an_ip_allowlist() -> None:
    with pytest.raises(ValidationError, match="secret keys only"):
        issue(key_type=KeyType.PUBLIC, allowed_ips=("203.0.113.0/24",))


def test_the_allowlist_can_be_replaced_and_cleared() -> None:
    key = issue(allowed_ips=("203.0.113.0/24",))
    key.set_allowed_ips(["198.51.100.0/24"], OPERATOR)
    assert key.allowed_ips == ["198.51.100.0/24"]
    key.set_allowed_ips([], OPERATOR)
    assert key.allowed_ips == []


def test_setting_the_same_allowlist_records_no_event() -> None:
    key = issue(allowed_ips=("203.0.113.0/24",))
    key.collect_events()
    key.set_allowed_ips(["203.0.113.0/24"], OPERATOR)
    assert key.collect_events() == []


def test_a_revoked_keys_allowlist_cannot_change() -> None:
    key = issue()
    key.revoke(OPERATOR)
    with pytest.raises(KeyRevoked):
        key.set_allowed_ips(["203.0.113.0/24"], OPERATOR)


def test_a_rolled_keys_successor_keeps_the_allowlist() -> None:
    org = an_org()
    key = issue(org, allowed_ips=("203.0.113.0/24",))
    successor, _ = key.roll(org, pepper=PEPPER, grace=HOUR, actor=OPERATOR, now=NOW)
    assert successor.allowed_ips == ["203.0.113.0/24"]


# -- exposure -------------------------------------------------------------------------------


def test_flagging_records_when_where_and_why_with_the_system_as_actor() -> None:
    key = issue()
    key.collect_events()
    assert key.flag_exposed(ExposureSource.BROWSER, "origin https://evil.example", SYSTEM)
    (event,) = key.collect_events()
    assert isinstance(event, ApiKey.Exposed)
    assert (event.source, event.detail, event.actor) == (
        "browser",
        "origin https://evil.example",
        "system",
    )
    assert key.exposed_at == event.timestamp
    assert key.exposures == [{"source": "browser", "detail": "origin https://evil.example"}]


def test_a_key_is_flagged_once_per_source() -> None:
    key = issue()
    key.flag_exposed(ExposureSource.BROWSER, "origin https://a.example", SYSTEM)
    key.collect_events()
    assert not key.flag_exposed(ExposureSource.BROWSER, "origin https://b.example", SYSTEM)
    assert key.collect_events() == []


def test_another_source_adds_a_second_exposure_but_keeps_the_first_time() -> None:
    key = issue()
    key.flag_exposed(ExposureSource.BROWSER, "origin https://a.example", SYSTEM)
    first = key.exposed_at
    assert key.flag_exposed(ExposureSource.LEAK_REPORT, "https://gist.example/1", SYSTEM)
    assert key.exposed_at == first
    assert [e["source"] for e in key.exposures] == ["browser", "leak_report"]


def test_a_revoked_key_is_not_flagged() -> None:
    key = issue()
    key.revoke(OPERATOR)
    assert not key.flag_exposed(ExposureSource.BROWSER, "origin https://a.example", SYSTEM)
    assert key.exposed_at is None


# -- expiry -----------------------------------------------------------------------------------


def test_a_key_is_not_expired_before_its_time() -> None:
    key = issue(expires_at=NOW + HOUR)
    assert not key.expire(NOW + HOUR - timedelta(seconds=1), SYSTEM)
    assert key.revoked_at is None


def test_a_key_at_its_expiry_time_is_retired_by_the_system() -> None:
    key = issue(expires_at=NOW + HOUR)
    key.collect_events()
    assert key.expire(NOW + HOUR, SYSTEM)
    (event,) = key.collect_events()
    assert isinstance(event, ApiKey.Expired)
    assert (event.actor, event.reason) == ("system", EXPIRED_AT_EXPIRY)


def test_a_rolled_key_at_the_end_of_its_grace_expires_with_that_reason() -> None:
    org = an_org()
    key = issue(org)
    key.roll(org, pepper=PEPPER, grace=HOUR, actor=OPERATOR, now=NOW)
    assert key.expire(NOW + HOUR, SYSTEM)
    assert key.revocation_reason == EXPIRED_AFTER_GRACE


def test_expiring_twice_is_a_no_op() -> None:
    key = issue(expires_at=NOW + HOUR)
    key.expire(NOW + HOUR, SYSTEM)
    key.collect_events()
    assert not key.expire(NOW + 2 * HOUR, SYSTEM)
    assert key.collect_events() == []


def test_a_key_without_expiry_never_expires() -> None:
    key = issue()
    assert not key.expire(NOW + timedelta(days=36500), SYSTEM)


def test_an_expired_key_reads_expired_not_revoked() -> None:
    key = issue(expires_at=NOW + HOUR)
    key.expire(NOW + HOUR, SYSTEM)
    assert key.status_at(NOW + 2 * HOUR) == KeyStatus.EXPIRED


# -- leak policy ------------------------------------------------------------------------------


def test_an_org_revokes_leaked_keys_by_default() -> None:
    assert an_org().leak_policy is LeakPolicy.REVOKE


def test_the_leak_policy_can_be_set_to_roll_and_survives_replay() -> None:
    org = an_org()
    org.set_leak_policy(LeakPolicy.ROLL, OPERATOR)
    copy = None
    for event in org.collect_events():
        copy = event.mutate(copy)
    assert isinstance(copy, Organization)
    assert copy.leak_policy is LeakPolicy.ROLL


def test_an_unknown_leak_policy_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="revoke or roll"):
        parse_leak_policy("ignore")
