"""UserDirectory: users saved with a claim on their email, in a store apart from the keys'."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from adapters.settings import Settings
from adapters.users import hash_password, verify_password
from application.stores import open_registry, open_user_directory
from application.users import UserDirectory
from domain.actors import OPERATOR
from domain.user import EmailTaken, Role


@pytest.fixture
def directory(settings: Settings) -> Iterator[UserDirectory]:
    users = open_user_directory(settings)
    yield users
    users.close()


def test_a_registered_user_is_found_by_email_in_any_case(
    directory: UserDirectory, settings: Settings
) -> None:
    org_id = uuid4()
    user = directory.register_user(
        org_id, email="Ana@Example.com", role=Role.ADMIN, password_hash="h", actor=OPERATOR
    )
    again = open_user_directory(settings)  # as another process would read it
    try:
        found = again.find_by_email("ANA@example.COM")
    finally:
        again.close()
    assert found is not None
    assert (found.id, found.org_id, found.role) == (user.id, org_id, Role.ADMIN)


def test_an_email_is_registered_once_across_organizations(directory: UserDirectory) -> None:
    directory.register_user(
        uuid4(), email="ana@example.com", role=Role.ADMIN, password_hash="h", actor=OPERATOR
    )
    with pytest.raises(EmailTaken):
        directory.register_user(
            uuid4(), email="ANA@example.com", role=Role.OWNER, password_hash="h", actor=OPERATOR
        )


def test_an_unknown_or_malformed_email_finds_no_user(directory: UserDirectory) -> None:
    assert directory.find_by_email("nobody@example.com") is None
    assert directory.find_by_email("not an email") is None


def test_users_stay_out_of_the_key_registrys_event_log(
    directory: UserDirectory, settings: Settings
) -> None:
    registry = open_registry(settings)
    try:
        before = registry.recorder.max_notification_id()
        directory.register_user(
            uuid4(), email="ana@example.com", role=Role.ADMIN, password_hash="h", actor=OPERATOR
        )
        assert registry.recorder.max_notification_id() == before
    finally:
        registry.close()


def test_a_disabled_user_stays_disabled_after_a_restart(
    directory: UserDirectory, settings: Settings
) -> None:
    user = directory.register_user(
        uuid4(), email="ana@example.com", role=Role.ADMIN, password_hash="h", actor=OPERATOR
    )
    directory.disable(user.id, actor=OPERATOR)
    again = open_user_directory(settings)
    try:
        assert again.get_user(user.id).disabled
    finally:
        again.close()


def test_passwords_are_stored_as_argon2id_hashes_that_verify() -> None:
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert verify_password(stored, "correct horse battery staple")
    assert not verify_password(stored, "wrong")
    assert not verify_password(None, "anything")
