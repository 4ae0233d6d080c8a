"""The access policy for webhook endpoints: the same rules as keys, and no endpoint that tells
a URL more than its creator could read."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from domain.access import (
    ROLE_WITHHOLDS,
    Command,
    Limits,
    WebhookFacts,
    WebhookGrant,
    allows,
    authorize,
    inherited_limits,
)
from domain.actors import OPERATOR, SYSTEM, KeyActor, UserActor
from domain.errors import NotAllowed, NotFound, PermissionExceeded
from domain.key_format import Environment, KeyType
from domain.plans import PLAN_PERMISSIONS, Permission, Plan
from domain.roles import Role

ORG = uuid4()
FREE = PLAN_PERMISSIONS[Plan.FREE]
LIVE, TEST = Environment.LIVE, Environment.TEST
KEY_EVENTS = frozenset({"api_key.revoked"})
ONLY_DISABLED = frozenset({"webhook.disabled"})
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def a_key(
    env: Environment = LIVE, permissions: frozenset[Permission] = FREE, **limits: object
) -> KeyActor:
    return KeyActor(uuid4(), ORG, env, KeyType.SECRET, permissions, **limits)  # type: ignore[arg-type]


def a_user(role: Role, org_id: UUID = ORG) -> UserActor:
    return UserActor(uuid4(), org_id, role, FREE)


def endpoint(env: Environment = LIVE, org_id: UUID = ORG) -> WebhookFacts:
    return WebhookFacts(uuid4(), org_id, env)


def grant(env: Environment = LIVE, events: frozenset[str] = KEY_EVENTS) -> WebhookGrant:
    return WebhookGrant(ORG, env, events)


def test_every_plan_reads_and_writes_webhooks() -> None:
    for plan in Plan:
        assert {Permission.WEBHOOKS_READ, Permission.WEBHOOKS_WRITE} <= PLAN_PERMISSIONS[plan]


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_owners_and_admins_manage_webhooks(role: Role) -> None:
    authorize(a_user(role), Command.MANAGE_WEBHOOKS, grant=grant())
    authorize(a_user(role), Command.MANAGE_WEBHOOKS, webhook=endpoint(), grant=grant())


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.AUDITOR])
def test_developers_and_auditors_only_read_webhooks(role: Role) -> None:
    authorize(a_user(role), Command.READ_WEBHOOKS, webhook=endpoint())
    with pytest.raises(NotAllowed, match="manage webhooks"):
        authorize(a_user(role), Command.MANAGE_WEBHOOKS, webhook=endpoint(), grant=grant())


def test_a_developer_cannot_mint_a_key_that_manages_webhooks() -> None:
    developer = a_user(Role.DEVELOPER)
    limits = inherited_limits(developer, FREE, Limits())
    assert limits.restriction is not None
    assert Permission.WEBHOOKS_WRITE not in limits.restriction
    assert Permission.WEBHOOKS_WRITE in ROLE_WITHHOLDS[Role.DEVELOPER]


def test_another_organizations_endpoint_does_not_exist() -> None:
    other = endpoint(org_id=uuid4())
    with pytest.raises(NotFound, match="webhook endpoint"):
        authorize(a_user(Role.OWNER), Command.READ_WEBHOOKS, webhook=other)
    with pytest.raises(NotFound):
        authorize(a_key(), Command.MANAGE_WEBHOOKS, webhook=other, grant=grant())


def test_a_test_key_sees_no_live_endpoint_and_adds_none() -> None:
    test_key = a_key(TEST)
    with pytest.raises(NotFound):
        authorize(test_key, Command.READ_WEBHOOKS, webhook=endpoint(LIVE))
    with pytest.raises(PermissionExceeded, match="test key"):
        authorize(test_key, Command.MANAGE_WEBHOOKS, grant=grant(LIVE))
    authorize(test_key, Command.MANAGE_WEBHOOKS, grant=grant(TEST))


def test_a_key_without_webhooks_write_cannot_manage_them() -> None:
    reader = a_key(permissions=FREE - {Permission.WEBHOOKS_WRITE})
    authorize(reader, Command.READ_WEBHOOKS, webhook=endpoint())
    with pytest.raises(PermissionExceeded, match="webhooks:write"):
        authorize(reader, Command.MANAGE_WEBHOOKS, grant=grant())


def test_key_objects_are_sent_only_where_the_key_could_read_them() -> None:
    blind = a_key(permissions=frozenset({Permission.WEBHOOKS_WRITE, Permission.WEBHOOKS_READ}))
    with pytest.raises(PermissionExceeded, match="api_keys:read"):
        authorize(blind, Command.MANAGE_WEBHOOKS, grant=grant(events=KEY_EVENTS))
    authorize(blind, Command.MANAGE_WEBHOOKS, grant=grant(events=ONLY_DISABLED))


def test_a_rolled_or_exposed_key_adds_and_changes_no_webhook() -> None:
    retiring = a_key(retiring=True)
    with pytest.raises(PermissionExceeded, match="rolled or flagged"):
        authorize(retiring, Command.MANAGE_WEBHOOKS, grant=grant())
    assert allows(retiring, Command.READ_WEBHOOKS, webhook=endpoint())


def test_the_operator_and_the_system_may_do_anything_with_webhooks() -> None:
    for actor in (OPERATOR, SYSTEM):
        authorize(actor, Command.MANAGE_WEBHOOKS, webhook=endpoint(org_id=uuid4()), grant=grant())


def test_endpoints_are_sent_only_where_the_key_could_read_them() -> None:
    writer = a_key(permissions=FREE - {Permission.WEBHOOKS_READ})
    with pytest.raises(PermissionExceeded, match="webhooks:read"):
        authorize(writer, Command.MANAGE_WEBHOOKS, grant=grant(events=ONLY_DISABLED))


@pytest.mark.parametrize(
    "limits",
    [{"expires_at": NOW}, {"allowed_ips": ("203.0.113.0/24",)}],
    ids=["expiring", "fenced"],
)
def test_a_key_limited_in_time_or_place_leaves_no_endpoint_behind(
    limits: dict[str, object],
) -> None:
    limited = a_key(**limits)
    with pytest.raises(PermissionExceeded, match="outlive it and send from anywhere"):
        authorize(limited, Command.MANAGE_WEBHOOKS, grant=grant())
    authorize(limited, Command.MANAGE_WEBHOOKS, webhook=endpoint())  # a test, a retry, a delete
