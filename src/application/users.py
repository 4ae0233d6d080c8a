"""UserDirectory: dashboard users, event-sourced in an application of their own.

Users live beside the KeyRegistry, not inside it: their events (which carry password
hashes) stay out of the key registry's notification log, so the relay never puts them on
the bus and the key projections never read them. Each user's email is claimed by an
`EmailClaim` aggregate with a deterministic id, saved in the same transaction as the user:
a second registration of the same email fails on the store's uniqueness, whatever process
makes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from domain.access import Command, authorize
from domain.actors import Actor
from domain.errors import NotFound, ValidationError
from domain.user import EmailClaim, EmailTaken, Role, User, email_claim_id, normalize_email

#: Attempts for a change that lost an optimistic-concurrency race.
COMMAND_ATTEMPTS = 5


class UserDirectory(Application[UUID]):
    """Dashboard users and the claims on their emails."""

    name = "DashboardUsers"

    def register_user(
        self, org_id: UUID, *, email: str, role: Role, password_hash: str, actor: Actor
    ) -> User:
        """A new user of `org_id`; EmailTaken if any user already has this email."""
        authorize(actor, Command.MANAGE_USERS, org_id=org_id)
        user = User.register(
            org_id, email=email, role=role, password_hash=password_hash, actor=actor
        )
        if self.find_by_email(user.email) is not None:
            raise EmailTaken(f"a user with the email {user.email} already exists")
        claim = EmailClaim(email=user.email, user_id=user.id)
        try:
            self.save(user, claim)
        except IntegrityError:
            raise EmailTaken(f"a user with the email {user.email} already exists") from None
        return user

    def get_user(self, user_id: UUID) -> User:
        """The user, or NotFound."""
        try:
            aggregate: Any = self.repository.get(user_id)
        except AggregateNotFoundError:
            raise NotFound("no such user") from None
        if not isinstance(aggregate, User):
            raise NotFound("no such user")
        return aggregate

    def find_by_email(self, email: str) -> User | None:
        """The user holding this email, or None (also for text that is not an email)."""
        try:
            claim_id = email_claim_id(email)
        except ValidationError:
            return None
        try:
            claim: Any = self.repository.get(claim_id)
        except AggregateNotFoundError:
            return None
        return self.get_user(claim.user_id)

    def change_role(self, user_id: UUID, role: Role, *, actor: Actor) -> User:
        """Give the user another role."""
        return self._update(user_id, actor, lambda user: user.change_role(role, actor))

    def change_password(self, user_id: UUID, password_hash: str, *, actor: Actor) -> User:
        """Replace the user's password hash (made by an adapter)."""
        return self._update(user_id, actor, lambda user: user.change_password(password_hash, actor))

    def disable(self, user_id: UUID, *, actor: Actor) -> User:
        """The user can no longer sign in."""
        return self._update(user_id, actor, lambda user: user.disable(actor))

    def _update(self, user_id: UUID, actor: Actor, change: Callable[[User], Any]) -> User:
        for attempt in range(COMMAND_ATTEMPTS):
            user = self.get_user(user_id)
            authorize(actor, Command.MANAGE_USERS, org_id=user.org_id)
            change(user)
            try:
                self.save(user)
            except IntegrityError:
                if attempt == COMMAND_ATTEMPTS - 1:
                    raise
                continue
            return user
        raise AssertionError("unreachable")


__all__ = ["UserDirectory", "normalize_email"]
