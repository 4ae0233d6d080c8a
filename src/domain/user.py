"""Dashboard users: members of one organization who sign in with an email and a password.

A `User` is event-sourced like every other aggregate. Its password arrives already hashed
(hashing is an adapter's job): the domain never sees a password. What each role may do is
the access policy's (`domain.access`). Emails are unique across the whole product: each
user owns an `EmailClaim` aggregate whose id is derived from the normalized email (uuid5), so
a second registration of the same email collides in the event store and is refused.
"""

from __future__ import annotations

import re
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor, UserActor, by_user
from domain.errors import DomainError, NotAllowed, ValidationError
from domain.plans import Permission
from domain.roles import Role, parse_role

MAX_EMAIL_LENGTH = 254
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


class EmailTaken(DomainError):
    code = "email_taken"


class UserDisabled(DomainError):
    code = "user_disabled"


def normalize_email(text: str) -> str:
    """The email trimmed and lower-cased, or ValidationError if it does not look like one."""
    email = text.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        raise ValidationError(f"{text[:60]!r} is not an email address")
    return email


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
        cls, org_id: UUID, *, email: str, role: Role, password_hash: str, actor: Actor
    ) -> User:
        """A new member of `org_id`; `password_hash` is what an adapter made of the password."""
        if not password_hash:
            raise ValidationError("a user needs a password")
        return cls(
            org_id=org_id,
            email=normalize_email(email),
            role=Role(role).value,
            password_hash=password_hash,
            actor=actor.name,
        )

    @property
    def role(self) -> Role:
        """The user's role, always a `Role`."""
        return Role(self._role)

    @property
    def actor_name(self) -> str:
        """The name this user acts under, as the events it causes record it."""
        return by_user(self.id)

    def acting(self, plan_permissions: frozenset[Permission]) -> UserActor:
        """This user as an actor, in an organization whose plan grants `plan_permissions`."""
        if self.disabled:
            raise UserDisabled("this account is disabled")
        return UserActor(self.id, self.org_id, self.role, plan_permissions)

    def change_role(self, role: Role, actor: Actor) -> None:
        """Give the user another role (a no-op when unchanged)."""
        role = Role(role)
        if role is not self.role:
            self._role_changed(
                org_id=self.org_id, role=role.value, previous=self.role.value, actor=actor.name
            )

    @event(RoleChanged)
    def _role_changed(self, org_id: UUID, role: str, previous: str, actor: str) -> None:
        self._role = Role(role).value

    def change_password(self, password_hash: str, actor: Actor) -> None:
        """Replace the password's hash (made by an adapter)."""
        if not password_hash:
            raise ValidationError("a user needs a password")
        self._password_changed(org_id=self.org_id, password_hash=password_hash, actor=actor.name)

    @event(PasswordChanged)
    def _password_changed(self, org_id: UUID, password_hash: str, actor: str) -> None:
        self.password_hash = password_hash

    def disable(self, actor: Actor) -> None:
        """The user can no longer sign in or act (a no-op when already disabled)."""
        if not self.disabled:
            self._disabled(org_id=self.org_id, actor=actor.name)

    @event(Disabled)
    def _disabled(self, org_id: UUID, actor: str) -> None:
        self.disabled = True


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


__all__ = [
    "EmailClaim",
    "EmailTaken",
    "NotAllowed",
    "Role",
    "User",
    "UserDisabled",
    "email_claim_id",
    "normalize_email",
    "parse_role",
]
