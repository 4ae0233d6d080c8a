"""The access policy: who may do what to which key, for every kind of actor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.access import (
    KEY_CHANGES,
    OWN_KEY_COMMANDS,
    PERMISSION,
    ROLE_COMMANDS,
    Command,
    KeyFacts,
    KeyGrant,
    Limits,
    allows,
    authorize,
    inherited_limits,
    visible_envs,
)
from domain.actors import OPERATOR, SYSTEM, KeyActor, UserActor, by_user
from domain.errors import NotAllowed, NotFound, PermissionExceeded
from domain.key_format import Environment, KeyType
from domain.plans import PLAN_PERMISSIONS, PUBLIC_KEY_PERMISSIONS, Permission, Plan
from domain.roles import Role

ORG = uuid4()
PRO = PLAN_PERMISSIONS[Plan.PRO]
FREE = PLAN_PERMISSIONS[Plan.FREE]
LIVE, TEST = Environment.LIVE, Environment.TEST
KEYS_READ, KEYS_WRITE = Permission.API_KEYS_READ, Permission.API_KEYS_WRITE
AUDIT = Permission.AUDIT_READ
#: What a developer's keys never carry: they would change others' keys or any webhook.
WITHHELD = {KEYS_WRITE, Permission.WEBHOOKS_WRITE}


NOW = datetime(2030, 1, 1, tzinfo=UTC)


def a_key(
    env: Environment = LIVE,
    permissions: frozenset[Permission] = PRO,
    *,
    org_id: UUID = ORG,
    key_type: KeyType = KeyType.SECRET,
    **limits: object,
) -> KeyActor:
    return KeyActor(uuid4(), org_id, env, key_type, permissions, **limits)  # type: ignore[arg-type]


def a_user(role: Role, plan: frozenset[Permission] = PRO, *, org_id: UUID = ORG) -> UserActor:
    return UserActor(uuid4(), org_id, role, plan)


def target(
    env: Environment = LIVE,
    permissions: frozenset[Permission] = PRO,
    *,
    org_id: UUID = ORG,
    created_by: str = "operator",
) -> KeyFacts:
    return KeyFacts(uuid4(), org_id, env, KeyType.SECRET, permissions, created_by)


def grant(
    env: Environment = LIVE,
    permissions: frozenset[Permission] = PRO,
    allowed_ips: tuple[str, ...] = (),
    expires_at: datetime | None = None,
) -> KeyGrant:
    return KeyGrant(ORG, env, KeyType.SECRET, permissions, allowed_ips, expires_at)


# -- every actor: organizations and environments -------------------------------------------


@pytest.mark.parametrize("command", list(Command))
def test_the_operator_and_the_system_may_do_anything_anywhere(command: Command) -> None:
    for actor in (OPERATOR, SYSTEM):
        authorize(actor, command, org_id=uuid4(), key=target(org_id=uuid4()), grant=grant())


@pytest.mark.parametrize("actor", [a_key(), a_user(Role.OWNER)], ids=["key", "owner"])
def test_another_organizations_key_does_not_exist(actor: KeyActor | UserActor) -> None:
    for command in (Command.READ_KEYS, Command.REVOKE_KEY, Command.ROLL_KEY):
        with pytest.raises(NotFound, match="no such API key"):
            authorize(actor, command, key=target(org_id=uuid4()))


def test_another_organization_does_not_exist_for_its_keys_and_users() -> None:
    for actor in (a_key(), a_user(Role.OWNER)):
        with pytest.raises(NotFound, match="no such organization"):
            authorize(actor, Command.READ_AUDIT, org_id=uuid4())
        with pytest.raises(NotFound):
            authorize(
                actor, Command.CREATE_KEY, grant=KeyGrant(uuid4(), TEST, KeyType.SECRET, FREE)
            )


@pytest.mark.parametrize("command", [Command.READ_KEYS, *sorted(KEY_CHANGES)])
def test_a_test_key_neither_sees_nor_touches_a_live_key(command: Command) -> None:
    with pytest.raises(NotFound):
        authorize(a_key(TEST), command, key=target(LIVE))
    authorize(a_key(TEST), command, key=target(TEST))


def test_test_mode_sees_test_mode_only_and_everyone_else_sees_both() -> None:
    assert visible_envs(a_key(TEST)) == {TEST}
    assert visible_envs(a_key(LIVE)) == {LIVE, TEST}
    assert visible_envs(a_user(Role.AUDITOR)) == {LIVE, TEST}
    assert visible_envs(OPERATOR) == {LIVE, TEST}


# -- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [c for c, p in PERMISSION.items() if p is not None])
def test_a_key_needs_the_permission_of_the_command(command: Command) -> None:
    needed = PERMISSION[command]
    assert needed is not None
    with pytest.raises(PermissionExceeded, match=f"lacks the {needed.value} permission"):
        authorize(a_key(permissions=PRO - {needed}), command)
    authorize(a_key(permissions=frozenset({needed})), command)


@pytest.mark.parametrize("command", [Command.MANAGE_ORGANIZATION, Command.MANAGE_USERS])
def test_no_key_manages_organizations_or_people(command: Command) -> None:
    with pytest.raises(PermissionExceeded, match="an API key cannot"):
        authorize(a_key(), command)


def test_a_test_key_cannot_create_a_live_key() -> None:
    with pytest.raises(PermissionExceeded, match="a test key cannot create live keys"):
        authorize(a_key(TEST), Command.CREATE_KEY, grant=grant(LIVE))
    authorize(a_key(TEST), Command.CREATE_KEY, grant=grant(TEST))


def test_a_test_key_cannot_roll_a_live_key_into_a_live_secret() -> None:
    with pytest.raises(NotFound):
        authorize(a_key(TEST), Command.ROLL_KEY, key=target(LIVE), grant=grant(LIVE))


def test_a_restricted_key_cannot_roll_a_broader_key() -> None:
    limited = a_key(permissions=frozenset({KEYS_WRITE}))
    with pytest.raises(PermissionExceeded, match="cannot roll a key with permissions it lacks"):
        authorize(limited, Command.ROLL_KEY, key=target(), grant=grant())


@pytest.mark.parametrize("command", sorted(KEY_CHANGES))
def test_a_restricted_key_changes_only_keys_within_its_own_permissions(command: Command) -> None:
    mine = frozenset({KEYS_WRITE, Permission.AFFILIATES_READ})
    limited = a_key(permissions=mine)
    with pytest.raises(PermissionExceeded, match=r"permissions it lacks itself$") as refused:
        authorize(limited, command, key=target(permissions=mine | {AUDIT}))
    assert "audit" not in str(refused.value)  # what the target may do is not disclosed
    authorize(limited, command, key=target(permissions=mine))
    authorize(limited, command, key=target(permissions=frozenset({KEYS_WRITE})))


def test_a_key_cannot_grant_what_it_lacks_itself() -> None:
    limited = a_key(permissions=frozenset({KEYS_WRITE, Permission.AFFILIATES_READ}))
    wanted = frozenset({Permission.AFFILIATES_READ, Permission.AFFILIATES_WRITE})
    with pytest.raises(PermissionExceeded, match="lacks itself: affiliates:write"):
        authorize(limited, Command.CREATE_KEY, grant=grant(permissions=wanted))
    authorize(
        limited,
        Command.CREATE_KEY,
        grant=grant(permissions=frozenset({Permission.AFFILIATES_READ})),
    )


def test_a_key_made_by_a_restricted_key_inherits_its_restriction_as_stored() -> None:
    mine = frozenset({KEYS_WRITE, Permission.AFFILIATES_READ})
    assert inherited_limits(a_key(permissions=mine, restriction=mine), PRO, Limits()) == Limits(
        mine
    )
    assert inherited_limits(a_key(permissions=PRO), PRO, Limits()) == Limits()


def test_a_restriction_that_covers_todays_plan_is_still_passed_on() -> None:
    # Restricted to exactly the free plan: after an upgrade, its children must not gain audit.
    limited = a_key(permissions=FREE, restriction=FREE)
    assert inherited_limits(limited, FREE, Limits()).restriction == FREE


def test_what_is_asked_wins_over_what_is_inherited_and_is_then_checked() -> None:
    mine = frozenset({KEYS_WRITE, Permission.AFFILIATES_READ})
    asked = Limits(frozenset({Permission.AFFILIATES_READ}), ("203.0.113.0/28",), NOW)
    fenced = a_key(permissions=mine, restriction=mine, allowed_ips=("203.0.113.0/24",))
    assert inherited_limits(fenced, PRO, asked) == asked


def test_a_key_limited_to_some_networks_passes_them_on_and_cannot_issue_beyond_them() -> None:
    fenced = a_key(allowed_ips=("10.0.0.0/8",))
    assert inherited_limits(fenced, PRO, Limits()).allowed_ips == ("10.0.0.0/8",)
    with pytest.raises(PermissionExceeded, match="usable from others"):
        authorize(fenced, Command.CREATE_KEY, grant=grant())
    with pytest.raises(PermissionExceeded, match="usable from others"):
        authorize(fenced, Command.CREATE_KEY, grant=grant(allowed_ips=("192.0.2.0/24",)))
    authorize(fenced, Command.CREATE_KEY, grant=grant(allowed_ips=("10.1.0.0/16",)))


def test_a_key_limited_to_some_networks_cannot_lift_them_from_itself_or_a_key_it_rolls() -> None:
    fenced = a_key(allowed_ips=("10.0.0.0/8",))
    itself = KeyFacts(fenced.key_id, ORG, LIVE, KeyType.SECRET, PRO, "operator")
    with pytest.raises(PermissionExceeded):
        authorize(fenced, Command.SET_KEY_ALLOWED_IPS, key=itself, grant=grant())
    with pytest.raises(PermissionExceeded):
        authorize(fenced, Command.ROLL_KEY, key=target(), grant=grant())
    authorize(fenced, Command.ROLL_KEY, key=itself, grant=grant(allowed_ips=("10.0.0.0/8",)))


def test_an_expiring_key_passes_on_its_expiry_and_cannot_issue_a_key_that_outlives_it() -> None:
    expiring = a_key(expires_at=NOW)
    assert inherited_limits(expiring, PRO, Limits()).expires_at == NOW
    with pytest.raises(PermissionExceeded, match="outlives it"):
        authorize(expiring, Command.CREATE_KEY, grant=grant())
    with pytest.raises(PermissionExceeded, match="outlives it"):
        authorize(expiring, Command.CREATE_KEY, grant=grant(expires_at=NOW + timedelta(days=1)))
    authorize(expiring, Command.CREATE_KEY, grant=grant(expires_at=NOW))


def test_an_expiring_key_may_still_change_where_a_longer_lived_key_works() -> None:
    expiring = a_key(expires_at=NOW)
    authorize(expiring, Command.SET_KEY_ALLOWED_IPS, key=target(), grant=grant())


@pytest.mark.parametrize("command", sorted(KEY_CHANGES | {Command.CREATE_KEY}))
def test_a_rolled_or_exposed_key_may_no_longer_create_or_change_keys(command: Command) -> None:
    retiring = a_key(retiring=True)
    with pytest.raises(PermissionExceeded, match="rolled or flagged as possibly exposed"):
        authorize(retiring, command, key=target(), grant=grant())
    authorize(retiring, Command.READ_KEYS, key=target())


def test_a_rolled_or_exposed_key_may_still_revoke_itself() -> None:
    retiring = a_key(retiring=True)
    itself = KeyFacts(retiring.key_id, ORG, LIVE, KeyType.SECRET, PRO, "operator")
    authorize(retiring, Command.REVOKE_KEY, key=itself)


def test_an_environment_given_as_text_is_not_mistaken_for_live() -> None:
    test_key = a_key(TEST)
    object.__setattr__(test_key, "env", "test")  # as a careless caller might build it
    assert visible_envs(test_key) == {TEST}
    with pytest.raises(NotFound):
        authorize(test_key, Command.READ_KEYS, key=target(LIVE))


def test_a_public_key_may_only_send_events() -> None:
    public = a_key(permissions=PUBLIC_KEY_PERMISSIONS, key_type=KeyType.PUBLIC)
    allowed = {c for c in Command if allows(public, c)}
    assert allowed == {Command.SEND_EVENTS}


@given(
    actor_env=st.sampled_from(list(Environment)),
    actor_permissions=st.frozensets(st.sampled_from(sorted(PRO))),
    target_env=st.sampled_from(list(Environment)),
    target_permissions=st.frozensets(st.sampled_from(sorted(PRO))),
    command=st.sampled_from(sorted(KEY_CHANGES | {Command.CREATE_KEY})),
)
def test_no_key_obtains_or_changes_a_key_with_more_than_it_has(
    actor_env: Environment,
    actor_permissions: frozenset[Permission],
    target_env: Environment,
    target_permissions: frozenset[Permission],
    command: Command,
) -> None:
    actor = a_key(actor_env, actor_permissions)
    key = None if command is Command.CREATE_KEY else target(target_env, target_permissions)
    issued = grant(target_env, target_permissions)
    if command not in (Command.CREATE_KEY, Command.ROLL_KEY):
        issued = None
    if not allows(actor, command, key=key, grant=issued):
        return
    assert target_permissions <= actor_permissions
    assert actor_env is LIVE or target_env is TEST


# -- dashboard users -----------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_owners_and_admins_may_do_everything_to_any_key(role: Role) -> None:
    for command in ROLE_COMMANDS[role]:
        authorize(a_user(role), command, key=target())


def test_a_developer_creates_keys_and_reads_everything() -> None:
    developer = a_user(Role.DEVELOPER)
    authorize(developer, Command.CREATE_KEY, grant=grant(permissions=PRO - WITHHELD))
    authorize(developer, Command.READ_KEYS, key=target())
    authorize(developer, Command.READ_AUDIT)


@pytest.mark.parametrize("command", sorted(KEY_CHANGES))
def test_a_developer_changes_only_the_keys_it_created(command: Command) -> None:
    developer = a_user(Role.DEVELOPER)
    with pytest.raises(NotAllowed, match=r"a developer may .* the API keys they created"):
        authorize(developer, command, key=target(created_by="user:usr_owner"))
    authorize(developer, command, key=target(created_by=by_user(developer.user_id)))


def test_a_developer_cannot_issue_a_key_that_changes_others_keys() -> None:
    developer = a_user(Role.DEVELOPER)
    with pytest.raises(NotAllowed, match="api_keys:write"):
        authorize(developer, Command.CREATE_KEY, grant=grant())
    default = inherited_limits(developer, PRO, Limits())
    assert default.restriction == PRO - WITHHELD
    assert inherited_limits(a_user(Role.ADMIN), PRO, Limits()) == Limits()


def test_a_developer_cannot_roll_an_owners_key() -> None:
    owner, developer = a_user(Role.OWNER), a_user(Role.DEVELOPER)
    owners_key = target(created_by=owner.name)
    assert not allows(developer, Command.ROLL_KEY, key=owners_key, grant=grant())
    assert allows(owner, Command.ROLL_KEY, key=owners_key, grant=grant())


def test_an_auditor_only_reads_keys_the_audit_log_usage_webhooks_and_key_policy() -> None:
    auditor = a_user(Role.AUDITOR)
    own_key = target(created_by=auditor.name)
    allowed = {c for c in Command if allows(auditor, c, key=own_key)}
    assert allowed == {
        Command.READ_KEYS,
        Command.READ_AUDIT,
        Command.READ_USAGE,
        Command.READ_WEBHOOKS,
        Command.READ_KEY_POLICY,
    }
    assert Role.AUDITOR not in OWN_KEY_COMMANDS


def test_a_refusal_names_the_role_in_plain_words() -> None:
    with pytest.raises(NotAllowed, match=r"your role \(auditor\) does not allow you to create"):
        authorize(a_user(Role.AUDITOR), Command.CREATE_KEY)


def test_a_user_on_a_plan_without_the_audit_log_cannot_read_it() -> None:
    owner = a_user(Role.OWNER, FREE)
    with pytest.raises(NotAllowed, match="plan does not include"):
        authorize(owner, Command.READ_AUDIT)
    authorize(a_user(Role.OWNER, PRO), Command.READ_AUDIT)


def test_no_user_manages_organizations_or_people_yet() -> None:
    for role in Role:
        assert not allows(a_user(role), Command.MANAGE_ORGANIZATION)
        assert not allows(a_user(role), Command.MANAGE_USERS)
