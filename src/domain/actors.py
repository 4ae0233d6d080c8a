"""Who acts: an API key, a dashboard user, the operator at the command line, or the system.

Every command takes one of these actors. The access policy (`domain.access`) reads what it
carries (permissions, role, organization) to decide; every lifecycle event records its
`name`: `operator` (the CLI), `system` (workers), `user:usr_…` (dashboard), `key:key_…` (API).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from typing import ClassVar
from uuid import UUID

from domain.ids import USER_PREFIX, format_id, format_key_id
from domain.key_format import Environment, KeyType
from domain.plans import Permission
from domain.roles import Role


def by_key(key_id: UUID) -> str:
    """The name an API key acts under."""
    return f"key:{format_key_id(key_id)}"


def by_user(user_id: UUID) -> str:
    """The name a dashboard user acts under."""
    return f"user:{format_id(USER_PREFIX, user_id)}"


@dataclass(frozen=True, slots=True)
class Operator:
    """Whoever runs the `icodrip` command line: trusted with every organization."""

    name: ClassVar[str] = "operator"


@dataclass(frozen=True, slots=True)
class System:
    """The service's own workers (expiry, leak response, exposure flags)."""

    name: ClassVar[str] = "system"


@dataclass(frozen=True, slots=True)
class KeyActor:
    """An API key acting; `permissions` are its effective ones (plan, restriction, type).

    The rest is what limits the keys it may issue. Authentication fills in only what a
    request's guard needs; the service layer acts with the key as stored now
    (`access.key_actor`), so a key revoked or rolled a moment ago acts as such.
    """

    key_id: UUID
    org_id: UUID
    env: Environment
    type: KeyType
    permissions: frozenset[Permission]
    _: KW_ONLY
    restriction: frozenset[Permission] | None = None  # as stored; None: the whole plan
    allowed_ips: tuple[str, ...] = ()
    expires_at: datetime | None = None
    retiring: bool = False  # rolled (in its grace period) or flagged as possibly exposed

    @property
    def name(self) -> str:
        return by_key(self.key_id)


@dataclass(frozen=True, slots=True)
class UserActor:
    """A signed-in dashboard user; `plan_permissions` are what its organization's plan grants."""

    user_id: UUID
    org_id: UUID
    role: Role
    plan_permissions: frozenset[Permission]

    @property
    def name(self) -> str:
        return by_user(self.user_id)


Actor = Operator | System | KeyActor | UserActor

OPERATOR = Operator()
SYSTEM = System()
