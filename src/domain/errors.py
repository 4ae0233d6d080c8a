"""Domain errors: each carries a stable code that adapters turn into responses or exit codes."""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the product was broken; `code` is stable, `message` is for people."""

    code = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(DomainError):
    code = "validation_error"


class NotFound(DomainError):
    code = "not_found"


class KeyRevoked(DomainError):
    code = "api_key_revoked"


class KeyAlreadyRolled(DomainError):
    code = "api_key_already_rolled"


class PermissionExceeded(DomainError):
    code = "insufficient_permissions"


class PlanDoesNotAllow(DomainError):
    code = "plan_does_not_allow"


class NotAllowed(DomainError):
    """A dashboard user's role (or its organization's plan) does not allow this."""

    code = "forbidden"
