"""Dashboard users: registration, roles and what each role may do, disabling, email claims."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.actors import OPERATOR, by_user
from domain.errors import ValidationError
from domain.user import (
    Action,
    EmailClaim,
    NotAllowed,
    Role,
    User,
    UserDisabled,
    email_claim_id,
    may,
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
    assert user.registered_by == OPERATOR
    assert isinstance(user.pending_events[0], User.Registered)


def test_a_user_acts_as_user_usr_hex() -> None:
    user = new_user()
    assert user.actor == by_user(user.id) == f"user:usr_{user.id.hex}"


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


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_owners_and_admins_may_do_everything_to_any_key(role: Role) -> None:
    assert all(may(role, action) for action in Action)


def test_a_developer_creates_and_rolls_any_key_but_revokes_and_renames_only_its_own() -> None:
    assert may(Role.DEVELOPER, Action.CREATE_KEY)
    assert may(Role.DEVELOPER, Action.ROLL_KEY)
    assert not may(Role.DEVELOPER, Action.REVOKE_KEY)
    assert not may(Role.DEVELOPER, Action.RENAME_KEY)
    assert may(Role.DEVELOPER, Action.REVOKE_KEY, own_key=True)
    assert may(Role.DEVELOPER, Action.RENAME_KEY, own_key=True)


def test_an_auditor_only_reads_keys_and_the_audit_log() -> None:
    allowed = {a for a in Action if may(Role.AUDITOR, a, own_key=True)}
    assert allowed == {Action.VIEW_KEYS, Action.VIEW_AUDIT}


def test_a_developer_may_revoke_a_key_whose_creator_is_itself() -> None:
    user = new_user(Role.DEVELOPER)
    assert user.may(Action.REVOKE_KEY, key_created_by=user.actor)
    assert not user.may(Action.REVOKE_KEY, key_created_by=OPERATOR)


def test_a_refusal_says_why_in_plain_words() -> None:
    with pytest.raises(NotAllowed, match="a developer may revoke the API keys they created"):
        new_user(Role.DEVELOPER).require(Action.REVOKE_KEY, key_created_by=OPERATOR)
    with pytest.raises(NotAllowed, match=r"your role \(auditor\) does not allow"):
        new_user(Role.AUDITOR).require(Action.CREATE_KEY)


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


def test_a_disabled_user_may_do_nothing() -> None:
    user = new_user(Role.OWNER)
    user.disable(OPERATOR)
    assert user.disabled
    assert not any(user.may(action) for action in Action)
    with pytest.raises(UserDisabled):
        user.require(Action.VIEW_KEYS)


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
