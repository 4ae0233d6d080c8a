"""ApiKey: issued for an organization, renamed, rolled and revoked; never more than its org."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.actors import OPERATOR, Actor, UserActor
from domain.api_key import ApiKey
from domain.errors import KeyAlreadyRolled, KeyRevoked, PermissionExceeded, ValidationError
from domain.key_format import Environment, KeyType, hash_key, hint_for, parse_key
from domain.key_limits import MAX_ROLL_GRACE
from domain.key_networks import MAX_ALLOWED_ORIGINS
from domain.key_states import KeyStatus
from domain.organization import Organization
from domain.plans import PLAN_PERMISSIONS, PUBLIC_KEY_PERMISSIONS, Permission, Plan
from domain.roles import Role

PEPPER = b"a-server-side-pepper-of-32-bytes"
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

AUDIT = Permission.AUDIT_READ
AFF_READ = Permission.AFFILIATES_READ
AFF_WRITE = Permission.AFFILIATES_WRITE
KEYS_WRITE = Permission.API_KEYS_WRITE
EVENTS = Permission.EVENTS_WRITE


def an_org(plan: Plan = Plan.PRO) -> Organization:
    return Organization.register("Acme", plan, OPERATOR)


def issue(
    org: Organization | None = None,
    *,
    name: str = "billing service",
    env: Environment = Environment.LIVE,
    key_type: KeyType = KeyType.SECRET,
    actor: Actor = OPERATOR,
    now: datetime = NOW,
    **options: object,
) -> tuple[ApiKey, str]:
    return ApiKey.issue(
        org or an_org(),
        name=name,
        env=env,
        key_type=key_type,
        pepper=PEPPER,
        actor=actor,
        now=now,
        **options,  # type: ignore[arg-type]
    )


def an_admin() -> UserActor:
    return UserActor(uuid4(), uuid4(), Role.ADMIN, PLAN_PERMISSIONS[Plan.PRO])


def roll(key: ApiKey, org: Organization, grace: timedelta = HOUR, now: datetime = NOW):  # type: ignore[no-untyped-def]
    return key.roll(org, pepper=PEPPER, grace=grace, actor=OPERATOR, now=now)


# -- issuing -------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", list(KeyType))
@pytest.mark.parametrize("env", list(Environment))
def test_an_issued_key_comes_with_its_plaintext_once(key_type: KeyType, env: Environment) -> None:
    org = an_org()

    key, plaintext = issue(org, env=env, key_type=key_type)

    parsed = parse_key(plaintext)
    assert (parsed.type, parsed.env) == (key_type, env)
    assert (key.type, key.env) == (key_type, env)
    assert key.org_id == org.id
    assert org.key_ids == [key.id]
    assert key.name == "billing service"
    assert key.status_at(NOW) == KeyStatus.ACTIVE


def test_a_key_holds_only_the_hash_and_hint_of_its_plaintext() -> None:
    key, plaintext = issue()

    assert key.key_hash == hash_key(plaintext, PEPPER)
    assert key.hint == hint_for(plaintext)
    secret_part = plaintext[8:35]
    for value in vars(key).values():
        assert plaintext not in repr(value)
        assert secret_part not in repr(value)


def test_no_event_of_an_issued_key_carries_its_plaintext() -> None:
    org = an_org()
    key, plaintext = issue(org)

    for event in key.collect_events() + org.collect_events():
        assert plaintext[8:35] not in repr(vars(event))


def test_two_keys_issued_alike_have_different_secrets() -> None:
    org = an_org()

    first, first_plain = issue(org)
    second, second_plain = issue(org)

    assert first_plain != second_plain
    assert first.key_hash != second.key_hash
    assert org.key_ids == [first.id, second.id]


def test_the_key_name_is_trimmed() -> None:
    key, _ = issue(name="  billing  ")

    assert key.name == "billing"


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "bad\nname", "bad\x7fname"])
def test_the_key_name_must_be_1_to_100_printable_characters(name: str) -> None:
    org = an_org()

    with pytest.raises(ValidationError, match="key name"):
        issue(org, name=name)

    assert org.key_ids == []


def test_an_unrestricted_key_inherits_all_of_the_orgs_permissions() -> None:
    org = an_org(Plan.PRO)

    key, _ = issue(org)

    assert key.permissions is None
    assert key.effective_permissions(org) == PLAN_PERMISSIONS[Plan.PRO]


def test_a_restricted_key_carries_a_subset() -> None:
    org = an_org(Plan.PRO)

    key, _ = issue(org, permissions=frozenset({AFF_READ, AUDIT}))

    assert key.effective_permissions(org) == {AFF_READ, AUDIT}


def test_a_restricted_key_needs_at_least_one_permission() -> None:
    with pytest.raises(ValidationError, match="at least one permission"):
        issue(permissions=frozenset())


def test_a_key_cannot_be_granted_more_than_its_orgs_plan() -> None:
    org = an_org(Plan.FREE)

    with pytest.raises(PermissionExceeded, match=r"audit:read") as caught:
        issue(org, permissions=frozenset({AFF_READ, AUDIT}))

    assert caught.value.code == "insufficient_permissions"
    assert org.key_ids == []


@given(
    plan=st.sampled_from(list(Plan)),
    key_type=st.sampled_from(list(KeyType)),
    requested=st.none() | st.frozensets(st.sampled_from(list(Permission))),
)
def test_a_keys_permissions_never_exceed_its_orgs(
    plan: Plan, key_type: KeyType, requested: frozenset[Permission] | None
) -> None:
    org = an_org(plan)
    try:
        key, _ = issue(org, key_type=key_type, permissions=requested)
    except (PermissionExceeded, ValidationError):
        return

    assert key.effective_permissions(org) <= org.permissions
    if requested is not None:
        assert key.effective_permissions(org) <= requested


def test_a_public_key_can_only_write_events() -> None:
    org = an_org(Plan.AGENCY)

    key, plaintext = issue(org, key_type=KeyType.PUBLIC)

    assert plaintext.startswith("pk_live_")
    assert key.effective_permissions(org) == PUBLIC_KEY_PERMISSIONS == {EVENTS}


@pytest.mark.parametrize("permissions", [{AFF_READ}, {EVENTS, AFF_READ}, {AUDIT}])
def test_a_public_key_cannot_be_given_more_than_events_write(permissions: set[Permission]) -> None:
    with pytest.raises(ValidationError, match="events:write"):
        issue(key_type=KeyType.PUBLIC, permissions=frozenset(permissions))


def test_a_public_key_keeps_its_allowed_origins_normalized() -> None:
    key, _ = issue(
        key_type=KeyType.PUBLIC,
        allowed_origins=("https://Shop.Example.com", " http://localhost:3000/ "),
    )

    assert key.allowed_origins == ["https://shop.example.com", "http://localhost:3000"]


def test_a_secret_key_takes_no_allowed_origins() -> None:
    with pytest.raises(ValidationError, match="public keys only"):
        issue(key_type=KeyType.SECRET, allowed_origins=("https://example.com",))


@pytest.mark.parametrize(
    "origin",
    [
        "example.com",
        "ftp://example.com",
        "javascript:alert(1)",
        "https://",
        "https://example.com/path",
        "https://example.com?x=1",
        "https://example.com#top",
        "https://user:pw@example.com",
        "",
    ],
)
def test_an_allowed_origin_must_be_scheme_and_host_only(origin: str) -> None:
    with pytest.raises(ValidationError, match="allowed origin"):
        issue(key_type=KeyType.PUBLIC, allowed_origins=(origin,))


def test_a_public_key_takes_at_most_50_allowed_origins() -> None:
    origins = tuple(f"https://site{i}.example.com" for i in range(MAX_ALLOWED_ORIGINS + 1))

    with pytest.raises(ValidationError, match="at most 50"):
        issue(key_type=KeyType.PUBLIC, allowed_origins=origins)
    key, _ = issue(key_type=KeyType.PUBLIC, allowed_origins=origins[:MAX_ALLOWED_ORIGINS])
    assert len(key.allowed_origins) == MAX_ALLOWED_ORIGINS


def test_an_expiry_must_be_in_the_future() -> None:
    with pytest.raises(ValidationError, match="future"):
        issue(expires_at=NOW)
    with pytest.raises(ValidationError, match="future"):
        issue(expires_at=NOW - HOUR)


# -- renaming --------------------------------------------------------------------------


def test_a_key_can_be_renamed() -> None:
    key, _ = issue()

    key.rename("  reporting  ", OPERATOR)

    assert key.name == "reporting"


def test_renaming_to_the_same_name_records_nothing() -> None:
    key, _ = issue(name="billing")
    key.collect_events()

    key.rename(" billing ", OPERATOR)

    assert key.collect_events() == []


@pytest.mark.parametrize("name", ["", " ", "y" * 101, "tab\tname"])
def test_a_new_name_follows_the_naming_rules(name: str) -> None:
    key, _ = issue(name="billing")

    with pytest.raises(ValidationError):
        key.rename(name, OPERATOR)

    assert key.name == "billing"


# -- revoking --------------------------------------------------------------------------


def test_a_revoked_key_records_who_revoked_it_when_and_why() -> None:
    key, _ = issue()
    admin = an_admin()

    key.revoke(admin, reason="leaked in a public repo")

    (revoked,) = key.collect_events()[-1:]
    assert key.is_revoked
    assert key.revoked_at == revoked.timestamp
    assert key.revoked_by == admin.name
    assert key.revocation_reason == "leaked in a public repo"
    assert key.status_at(NOW) == KeyStatus.REVOKED


def test_a_revocation_reason_is_at_most_500_characters() -> None:
    key, _ = issue()

    with pytest.raises(ValidationError, match="500"):
        key.revoke(OPERATOR, reason="x" * 501)

    assert not key.is_revoked
    key.revoke(OPERATOR, reason="x" * 500)
    assert key.is_revoked


def test_a_revoked_key_cannot_be_revoked_again() -> None:
    key, _ = issue()
    key.revoke(OPERATOR)

    with pytest.raises(KeyRevoked) as caught:
        key.revoke(OPERATOR)

    assert caught.value.code == "api_key_revoked"


def test_a_revoked_key_cannot_be_renamed() -> None:
    key, _ = issue(name="billing")
    key.revoke(OPERATOR)

    with pytest.raises(KeyRevoked):
        key.rename("other", OPERATOR)

    assert key.name == "billing"


def test_a_revoked_key_cannot_be_rolled() -> None:
    org = an_org()
    key, _ = issue(org)
    key.revoke(OPERATOR)

    with pytest.raises(KeyRevoked):
        roll(key, org)

    assert key.successor_id is None
    assert org.key_ids == [key.id]


# -- rolling ---------------------------------------------------------------------------


def test_rolling_issues_a_successor_and_lets_the_old_key_expire_after_the_grace() -> None:
    org = an_org()
    old, old_plain = issue(org, permissions=frozenset({AFF_READ}))

    new, new_plain = roll(old, org, grace=24 * HOUR)

    assert new_plain != old_plain
    assert parse_key(new_plain).type is KeyType.SECRET
    assert old.successor_id == new.id
    assert new.predecessor_id == old.id
    assert old.expires_at == NOW + 24 * HOUR
    assert new.expires_at is None
    assert (new.name, new.env, new.type, new.permissions) == (
        old.name,
        old.env,
        old.type,
        old.permissions,
    )
    assert new.key_hash == hash_key(new_plain, PEPPER)
    assert org.key_ids == [old.id, new.id]


def test_a_rolled_public_key_keeps_its_allowed_origins() -> None:
    org = an_org()
    old, _ = issue(org, key_type=KeyType.PUBLIC, allowed_origins=("https://example.com",))

    new, plaintext = roll(old, org)

    assert plaintext.startswith("pk_live_")
    assert new.allowed_origins == ["https://example.com"]


def test_rolling_never_extends_an_expiry_the_key_already_had() -> None:
    org = an_org()
    old, _ = issue(org, expires_at=NOW + 2 * HOUR)

    new, _ = roll(old, org, grace=24 * HOUR)

    assert old.expires_at == NOW + 2 * HOUR
    assert new.expires_at == NOW + 2 * HOUR


@pytest.mark.parametrize("grace", [timedelta(0), MAX_ROLL_GRACE])
def test_the_grace_period_may_be_zero_to_thirty_days(grace: timedelta) -> None:
    org = an_org()
    old, _ = issue(org)

    roll(old, org, grace=grace)

    assert old.expires_at == NOW + grace


@pytest.mark.parametrize(
    "grace", [timedelta(seconds=-1), MAX_ROLL_GRACE + timedelta(seconds=1), timedelta(days=365)]
)
def test_a_grace_period_outside_zero_to_thirty_days_is_refused(grace: timedelta) -> None:
    org = an_org()
    old, _ = issue(org)

    with pytest.raises(ValidationError, match="grace period"):
        roll(old, org, grace=grace)

    assert old.successor_id is None
    assert old.expires_at is None
    assert org.key_ids == [old.id]


def test_a_key_cannot_be_rolled_twice() -> None:
    org = an_org()
    old, _ = issue(org)
    new, _ = roll(old, org)

    with pytest.raises(KeyAlreadyRolled, match="roll its successor") as caught:
        roll(old, org)

    assert caught.value.code == "api_key_already_rolled"
    assert old.successor_id == new.id
    assert org.key_ids == [old.id, new.id]


def test_the_successor_of_a_rolled_key_can_itself_be_rolled() -> None:
    org = an_org()
    first, _ = issue(org)
    second, _ = roll(first, org)

    third, _ = roll(second, org)

    assert second.successor_id == third.id
    assert third.predecessor_id == second.id


def test_an_expired_key_cannot_be_rolled() -> None:
    org = an_org()
    key, _ = issue(org, expires_at=NOW + HOUR)

    with pytest.raises(ValidationError, match="expired"):
        roll(key, org, now=NOW + HOUR)


def test_a_roll_event_carries_the_successor_and_the_old_keys_expiry() -> None:
    org = an_org()
    old, _ = issue(org)
    old.collect_events()

    new, _ = roll(old, org)

    (rolled,) = old.collect_events()
    assert isinstance(rolled, ApiKey.Rolled)
    assert (rolled.successor_id, rolled.expires_at) == (new.id, NOW + HOUR)


# -- status -----------------------------------------------------------------------------


def test_a_fresh_key_is_active() -> None:
    key, _ = issue()

    assert key.status_at(NOW) == KeyStatus.ACTIVE == "active"
    assert key.status_at(NOW + timedelta(days=3650)) == KeyStatus.ACTIVE


def test_a_rolled_key_is_expiring_during_its_grace_and_expired_after() -> None:
    org = an_org()
    old, _ = issue(org)
    new, _ = roll(old, org, grace=HOUR)

    assert old.status_at(NOW) == KeyStatus.EXPIRING == "expiring"
    assert old.status_at(NOW + HOUR - timedelta(microseconds=1)) == KeyStatus.EXPIRING
    assert old.status_at(NOW + HOUR) == KeyStatus.EXPIRED == "expired"
    assert new.status_at(NOW + HOUR) == KeyStatus.ACTIVE


def test_a_key_with_an_expiry_is_active_until_then_and_expired_from_then() -> None:
    key, _ = issue(expires_at=NOW + HOUR)

    assert key.status_at(NOW) == KeyStatus.ACTIVE
    assert key.status_at(NOW + HOUR) == KeyStatus.EXPIRED


def test_revoked_overrides_every_other_status() -> None:
    org = an_org()
    old, _ = issue(org)
    roll(old, org, grace=HOUR)

    old.revoke(OPERATOR)

    assert old.status_at(NOW) == KeyStatus.REVOKED == "revoked"
    assert old.status_at(NOW + 2 * HOUR) == KeyStatus.REVOKED


# -- events and the org's plan ---------------------------------------------------------


def test_every_event_carries_its_org_actor_and_timestamp() -> None:
    org = an_org()
    admin = an_admin()
    old, _ = issue(org, actor=admin)
    old.rename("renamed", admin)
    new, _ = old.roll(org, pepper=PEPPER, grace=HOUR, actor=admin, now=NOW)
    old.revoke(admin, reason="rotated")

    events = old.collect_events() + new.collect_events()

    assert [type(e).__name__ for e in events] == [
        "Created",
        "Renamed",
        "Rolled",
        "Revoked",
        "Created",
    ]
    for e in events:
        assert e.org_id == org.id  # type: ignore[attr-defined]
        assert e.actor == admin.name  # type: ignore[attr-defined]
        assert e.timestamp.tzinfo is not None
    assert old.created_by == new.created_by == admin.name


def test_effective_permissions_shrink_when_the_org_is_downgraded() -> None:
    org = an_org(Plan.PRO)
    unrestricted, _ = issue(org)
    restricted, _ = issue(org, permissions=frozenset({AFF_READ, AUDIT}))

    org.change_plan(Plan.FREE, OPERATOR)

    assert AUDIT not in unrestricted.effective_permissions(org)
    assert unrestricted.effective_permissions(org) == PLAN_PERMISSIONS[Plan.FREE]
    assert restricted.effective_permissions(org) == {AFF_READ}
    assert restricted.permissions == {AFF_READ, AUDIT}


def test_effective_permissions_come_back_when_the_org_is_upgraded_again() -> None:
    org = an_org(Plan.PRO)
    restricted, _ = issue(org, permissions=frozenset({AFF_READ, AUDIT}))
    org.change_plan(Plan.FREE, OPERATOR)

    org.change_plan(Plan.AGENCY, OPERATOR)

    assert restricted.effective_permissions(org) == {AFF_READ, AUDIT}


def test_a_key_replays_from_its_events_to_the_same_state() -> None:
    org = an_org()
    key, _ = issue(org, permissions=frozenset({AFF_READ}))
    key.rename("renamed", OPERATOR)
    roll(key, org)
    key.revoke(OPERATOR, reason="done")

    copy = None
    for e in key.collect_events():
        copy = e.mutate(copy)

    assert copy is not None
    assert vars(copy) == vars(key)
