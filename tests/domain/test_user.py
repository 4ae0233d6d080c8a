"""Dashboard users: registration, roles, acting as themselves, disabling, email claims.

What each role may do is the access policy's: tests/domain/test_access.py.
"""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.actors import OPERATOR, UserActor, by_user
from domain.errors import ValidationError
from domain.plans import PLAN_PERMISSIONS, Plan
from domain.user import (
    EmailClaim,
    Role,
    User,
    UserDisabled,
    email_claim_id,
    normalize_email,
    parse_role,
)


def new_user(role: Role = Role.DEVELOPER) -> User:
    return User.register(
        uuid4(), email="Ana@Example.com ", role=role, password_hash="$argon2id$…", actor=OPERATOR
    )


def test_a_user_is_registered_with_a_normalized_email_a_role_and_the_given_hash() -> None:
    user = new_user(Role.ADMIN)
    assert user.email == "ana@example.com"
    assert user.role is Role.ADMIN
    assert user.password_hash == "$argon2id$…"
    assert not user.disabled
    assert user.registered_by == OPERATOR.name
    assert isinstance(user.pending_events[0], User.Registered)


def test_a_user_acts_as_user_usr_hex() -> None:
    user = new_user()
    assert user.actor_name == by_user(user.id) == f"user:usr_{user.id.hex}"


@pytest.mark.parametrize("text", ["", "ana", "ana@", "@example.com", "a b@example.com"])
def test_text_that_is_not_an_email_is_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        normalize_email(text)


def test_a_user_needs_a_password_hash() -> None:
    with pytest.raises(ValidationError):
        User.register(uuid4(), email="a@b.io", role=Role.OWNER, password_hash="", actor=OPERATOR)


def test_an_unknown_role_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(ValidationError, match="owner, admin, developer, auditor"):
        parse_role("superuser")


def test_a_user_acts_with_its_role_under_its_organizations_plan() -> None:
    user = new_user(Role.AUDITOR)
    plan = PLAN_PERMISSIONS[Plan.FREE]
    assert user.acting(plan) == UserActor(user.id, user.org_id, Role.AUDITOR, plan)
    assert user.acting(plan).name == user.actor_name


def test_a_role_change_is_an_event_with_the_previous_role() -> None:
    user = new_user(Role.DEVELOPER)
    user.change_role(Role.ADMIN, OPERATOR)
    event = user.pending_events[-1]
    assert isinstance(event, User.RoleChanged)
    assert (event.role, event.previous) == ("admin", "developer")
    assert user.role is Role.ADMIN


def test_changing_to_the_same_role_records_nothing() -> None:
    user = new_user(Role.ADMIN)
    user.change_role(Role.ADMIN, OPERATOR)
    assert len(user.pending_events) == 1


def test_a_disabled_user_cannot_act() -> None:
    user = new_user(Role.OWNER)
    user.disable(OPERATOR)
    assert user.disabled
    with pytest.raises(UserDisabled):
        user.acting(PLAN_PERMISSIONS[Plan.PRO])


def test_a_user_replayed_from_its_events_is_the_same_user() -> None:
    user = new_user(Role.DEVELOPER)
    user.change_role(Role.AUDITOR, OPERATOR)
    user.change_password("$argon2id$new", OPERATOR)
    user.disable(OPERATOR)
    replayed = None
    for event in user.collect_events():
        replayed = event.mutate(replayed)
    assert isinstance(replayed, User)
    assert (replayed.role, replayed.password_hash, replayed.disabled) == (
        Role.AUDITOR,
        "$argon2id$new",
        True,
    )


def test_an_emails_claim_has_the_same_id_however_the_email_is_written() -> None:
    claim = EmailClaim(email="ana@example.com", user_id=uuid4())
    assert claim.id == email_claim_id(" ANA@example.com") == email_claim_id("ana@example.com")
    assert email_claim_id("bob@example.com") != claim.id
