"""`/v1/organization`: the organization's key-lifetime policy, read and changed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from icodrip_client._core import UNCHANGED, Call, Unchanged, path, whole
from icodrip_client._models.fields import obj
from icodrip_client._models.organization import KeyPolicy
from icodrip_client._resources._base import AsyncResource, SyncResource

SECOND = timedelta(seconds=1)


def _policy(body: Any) -> KeyPolicy:
    return KeyPolicy.from_dict(obj(body))


def _get_policy() -> Call[KeyPolicy]:
    return Call("GET", path("organization", "policy"), _policy)


def _update_policy(
    max_lifetime: timedelta | Unchanged | None,
    require_expiry: str | Unchanged | None,
    revoke_unused_after: timedelta | Unchanged | None,
) -> Call[KeyPolicy]:
    """The PATCH: only the rules given are sent (None: the rule is off); the others are kept."""
    body: dict[str, Any] = {}
    if not isinstance(max_lifetime, Unchanged):
        body["max_lifetime_seconds"] = _seconds(max_lifetime, "max_lifetime")
    if not isinstance(require_expiry, Unchanged):
        body["require_expiry"] = "none" if require_expiry is None else require_expiry
    if not isinstance(revoke_unused_after, Unchanged):
        body["revoke_unused_after_seconds"] = _seconds(revoke_unused_after, "revoke_unused_after")
    return Call("PATCH", path("organization", "policy"), _policy, body=body)


def _seconds(duration: timedelta | None, what: str) -> int | None:
    return None if duration is None else whole(duration, SECOND, what)


class Organization(SyncResource):
    """The calling key's organization (`client.organization`)."""

    def policy(self) -> KeyPolicy:
        """The key-lifetime policy (needs `api_keys:read`)."""
        return self._run(_get_policy())

    def update_policy(
        self,
        *,
        max_lifetime: timedelta | Unchanged | None = UNCHANGED,
        require_expiry: str | Unchanged | None = UNCHANGED,
        revoke_unused_after: timedelta | Unchanged | None = UNCHANGED,
    ) -> KeyPolicy:
        """Change the rules given and keep the others; None turns a rule off. The policy now.

        `max_lifetime` (1 hour to 3650 days): keys created or rolled from now on must expire
        within it. `require_expiry`: `"live"` or `"all"` keys must have an expiry (`"none"`,
        or None: no requirement). `revoke_unused_after` (1 day to 3650 days): keys unused this
        long are revoked by the system, after a warning. Durations are whole seconds. Keys
        already issued are not changed. Needs `api_keys:write` from a live key that is neither
        rolled nor flagged exposed."""
        return self._run(_update_policy(max_lifetime, require_expiry, revoke_unused_after))


class AsyncOrganization(AsyncResource):
    """The calling key's organization (`client.organization`)."""

    async def policy(self) -> KeyPolicy:
        return await self._run(_get_policy())

    async def update_policy(
        self,
        *,
        max_lifetime: timedelta | Unchanged | None = UNCHANGED,
        require_expiry: str | Unchanged | None = UNCHANGED,
        revoke_unused_after: timedelta | Unchanged | None = UNCHANGED,
    ) -> KeyPolicy:
        return await self._run(_update_policy(max_lifetime, require_expiry, revoke_unused_after))
