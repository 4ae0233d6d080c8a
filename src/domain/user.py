"""Dashboard users: members of one organization who sign in with an email and a password.

A `User` is event-sourced like every other aggregate. Its password arrives already hashed
(hashing is an adapter's job): the domain never sees a password. Roles decide what a user may
do in the dashboard, as pure rules (`may`). Emails are unique across the whole product: each
user owns an `EmailClaim` aggregate whose id is derived from the normalized email (uuid5), so
a second registration of the same email collides in the event store and is refused.
"""

from __future__ import annotations

import re
from enum import StrEnum
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.actors import by_user
from domain.errors import DomainError, ValidationError

MAX_EMAIL_LENGTH = 254
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


class Role(StrEnum):
    """What a member of an organization may do in the dashboard."""

    OWNER = "owner"
    ADMIN = "admin"
    DEVELOPER = "developer"
    AUDITOR = "auditor"


class Action(StrEnum):
    """Things a dashboard user asks to do."""

    VIEW_KEYS = "view_keys"
    CREATE_KEY = "create_key"
    ROLL_KEY = "roll_key"
    RENAME_KEY = "rename_key"
    REVOKE_KEY = "revoke_key"
    VIEW_AUDIT = "view_audit"


#: Actions a role may take on any key of its organization.
_ANY_KEY: dict[Role, frozenset[Action]] = {
    Role.OWNER: frozenset(Action),
    Role.ADMIN: frozenset(Action),
    Role.DEVELOPER: frozenset(
        {Action.VIEW_KEYS, Action.CREATE_KEY, Action.ROLL_KEY, Action.VIEW_AUDIT}
    ),
    Role.AUDITOR: frozenset({Action.VIEW_KEYS, Action.VIEW_AUDIT}),
}
#: Actions a role may take on the keys it created itself, beyond `_ANY_KEY`.
_OWN_KEY: dict[Role, frozenset[Action]] = {
    Role.DEVELOPER: frozenset({Action.RENAME_KEY, Action.REVOKE_KEY}),
}


class NotAllowed(DomainError):
    """The user's role does not allow this action."""

    code = "forbidden"


class EmailTaken(DomainError):
    code = "email_taken"


class UserDisabled(DomainError):
    code = "user_disabled"


def parse_role(text: str) -> Role:
    """The role named `text`, or ValidationError listing the valid ones."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        valid = ", ".join(r.value for r in Role)
        raise ValidationError(f"unknown role {text[:40]!r}: expected one of {valid}") from None


def normalize_email(text: str) -> str:
    """The email trimmed and lower-cased, or ValidationError if it does not look like one."""
    email = text.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        raise ValidationError(f"{text[:60]!r} is not an email address")
    return email


def may(role: Role, action: Action, *, own_key: bool = False) -> bool:
    """Whether `role` may take `action` (on a key it created itself when `own_key`)."""
    role = Role(role)
    if action in _ANY_KEY[role]:
        return True
    return own_key and action in _OWN_KEY.get(role, frozenset())


def email_claim_id(email: str) -> UUID:
    """The id of the claim on this email (the same email always gives the same id)."""
    return uuid5(NAMESPACE_URL, f"/icodrip/dashboard-users/email/{normalize_email(email)}")


class User(Aggregate):
    """A member of an organization who signs in to the dashboard."""

    class Registered(Aggregate.Created):
        org_id: UUID
        email: str
        role: str
        password_hash: str
        actor: str

    class RoleChanged(Aggregate.Event):
        org_id: UUID
        role: str
        previous: str
        actor: str

    class PasswordChanged(Aggregate.Event):
        org_id: UUID
        password_hash: str
        actor: str

    class Disabled(Aggregate.Event):
        org_id: UUID
        actor: str

    @event(Registered)
    def __init__(self, org_id: UUID, email: str, role: str, password_hash: str, actor: str) -> None:
        self.org_id = org_id
        self.email = email
        self._role = Role(role).value
        self.password_hash = password_hash
        self.registered_by = actor
        self.disabled = False

    @classmethod
    def register(
        cls, org_id: UUID, *, email: str, role: Role, password_hash: str, actor: str
    ) -> User:
        """A new member of `org_id`; `password_hash` is what an adapter made of the password."""
        if not password_hash:
            raise ValidationError("a user needs a password")
        return cls(
            org_id=org_id,
            email=normalize_email(email),
            role=Role(role).value,
            password_hash=password_hash,
            actor=actor,
        )

    @property
    def role(self) -> Role:
        """The user's role, always a `Role`."""
        return Role(self._role)

    @property
    def actor(self) -> str:
        """How this user appears as the actor of the events it causes."""
        return by_user(self.id)

    def change_role(self, role: Role, actor: str) -> None:
        """Give the user another role (a no-op when unchanged)."""
        role = Role(role)
        if role is not self.role:
            self._role_changed(
                org_id=self.org_id, role=role.value, previous=self.role.value, actor=actor
            )

    @event(RoleChanged)
    def _role_changed(self, org_id: UUID, role: str, previous: str, actor: str) -> None:
        self._role = Role(role).value

    def change_password(self, password_hash: str, actor: str) -> None:
        """Replace the password's hash (made by an adapter)."""
        if not password_hash:
            raise ValidationError("a user needs a password")
        self._password_changed(org_id=self.org_id, password_hash=password_hash, actor=actor)

    @event(PasswordChanged)
    def _password_changed(self, org_id: UUID, password_hash: str, actor: str) -> None:
        self.password_hash = password_hash

    def disable(self, actor: str) -> None:
        """The user can no longer sign in or act (a no-op when already disabled)."""
        if not self.disabled:
            self._disabled(org_id=self.org_id, actor=actor)

    @event(Disabled)
    def _disabled(self, org_id: UUID, actor: str) -> None:
        self.disabled = True

    def may(self, action: Action, *, key_created_by: str | None = None) -> bool:
        """Whether this user may take `action` (on a key made by `key_created_by`)."""
        if self.disabled:
            return False
        return may(self.role, action, own_key=key_created_by == self.actor)

    def require(self, action: Action, *, key_created_by: str | None = None) -> None:
        """Raise NotAllowed, naming the role, unless this user may take `action`."""
        if self.disabled:
            raise UserDisabled("this account is disabled")
        if not self.may(action, key_created_by=key_created_by):
            raise NotAllowed(_refusal(self.role, action))


def _refusal(role: Role, action: Action) -> str:
    what = {
        Action.VIEW_KEYS: "view API keys",
        Action.CREATE_KEY: "create API keys",
        Action.ROLL_KEY: "roll API keys",
        Action.RENAME_KEY: "rename this API key",
        Action.REVOKE_KEY: "revoke this API key",
        Action.VIEW_AUDIT: "view the audit log",
    }[action]
    if role is Role.DEVELOPER and action in _OWN_KEY[Role.DEVELOPER]:
        return f"a developer may {what.replace('this ', 'the ')}s they created, not others"
    return f"your role ({role.value}) does not allow you to {what}"


class EmailClaim(Aggregate):
    """Who holds an email address; its id is `email_claim_id(email)`, so it exists once."""

    class Claimed(Aggregate.Created):
        email: str
        user_id: UUID

    @event(Claimed)
    def __init__(self, email: str, user_id: UUID) -> None:
        self.email = email
        self.user_id = user_id

    @staticmethod
    def create_id(email: str, user_id: UUID) -> UUID:
        """The claim's id depends on the email only."""
        return email_claim_id(email)
