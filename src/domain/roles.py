"""Roles of dashboard users: what a member of an organization is there to do."""

from __future__ import annotations

from enum import StrEnum

from domain.errors import ValidationError


class Role(StrEnum):
    """A member's role; `domain.access` says what each may do."""

    OWNER = "owner"
    ADMIN = "admin"
    DEVELOPER = "developer"
    AUDITOR = "auditor"


def parse_role(text: str) -> Role:
    """The role named `text`, or ValidationError listing the valid ones."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        valid = ", ".join(r.value for r in Role)
        raise ValidationError(f"unknown role {text[:40]!r}: expected one of {valid}") from None
