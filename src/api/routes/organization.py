"""`/v1/organization/policy`: the key-lifetime policy of the calling key's organization.

`GET` needs `api_keys:read`. `PATCH` needs `api_keys:write` from a live, unrestricted key
without an expiry or allowed IPs that is not retiring (`domain.access`): each field sent
replaces that rule, `null`
turns it off, a field left out keeps it. Keys already issued are not changed; creating or
rolling a key that breaks the policy answers `422 policy_violation` with the rule named.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, patch
from litestar.di import NamedDependency
from litestar.params import JSONBody
from msgspec import UNSET, UnsetType

from api.objects.organization import KeyPolicy
from api.services import Services
from application.key_lifetimes import KeyLifetimes
from domain.access import Command
from domain.lifetime_policy import ExpiryRequirement, LifetimePolicy
from projections.key_lookup import Principal

#: A rule's length as a change sends it (the policy's own bounds are checked when it is set).
RuleSeconds = Annotated[int, msgspec.Meta(ge=1, le=3650 * 86400)]


class KeyPolicyChange(msgspec.Struct, forbid_unknown_fields=True):
    max_lifetime_seconds: RuleSeconds | UnsetType | None = UNSET
    require_expiry: Literal["none", "live", "all"] | UnsetType = UNSET
    revoke_unused_after_seconds: RuleSeconds | UnsetType | None = UNSET

    def applied_to(self, policy: LifetimePolicy) -> LifetimePolicy:
        """`policy` with the rules this change sends (ValidationError when out of bounds)."""
        return LifetimePolicy(
            max_lifetime=_duration(self.max_lifetime_seconds, policy.max_lifetime),
            require_expiry=(
                policy.require_expiry
                if isinstance(self.require_expiry, UnsetType)
                else ExpiryRequirement(self.require_expiry)
            ),
            revoke_unused_after=_duration(
                self.revoke_unused_after_seconds, policy.revoke_unused_after
            ),
        )


def _duration(sent: int | UnsetType | None, kept: timedelta | None) -> timedelta | None:
    if isinstance(sent, UnsetType):
        return kept
    return None if sent is None else timedelta(seconds=sent)


class OrganizationController(Controller):
    path = "/v1/organization"
    tags = ["organization"]
    security = [{"BearerAuth": []}]

    @get("/policy", opt={"command": Command.READ_KEY_POLICY})
    async def get_key_policy(
        self, request: Request[Principal, Any, Any], services: NamedDependency[Services]
    ) -> KeyPolicy:
        """The organization's key-lifetime policy."""
        principal = request.user
        policy = await asyncio.to_thread(
            KeyLifetimes(services.registry).policy_for, principal, principal.org_id
        )
        return KeyPolicy.of(principal.org_id_text, policy)

    @patch("/policy", opt={"command": Command.SET_KEY_POLICY})
    async def change_key_policy(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        data: JSONBody[KeyPolicyChange],
    ) -> KeyPolicy:
        """Change some rules of the key-lifetime policy (null turns one off)."""
        principal = request.user
        org = await asyncio.to_thread(
            KeyLifetimes(services.registry).change_policy,
            principal,
            principal.org_id,
            data.applied_to,
        )
        return KeyPolicy.of(principal.org_id_text, org.lifetime_policy)
