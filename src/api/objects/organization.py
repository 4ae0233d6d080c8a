"""The organization's settings a key may read: its key-lifetime policy."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from domain.lifetime_policy import LifetimePolicy

Seconds = Annotated[int, msgspec.Meta(ge=0, description="a duration in seconds")]


class KeyPolicy(msgspec.Struct, kw_only=True):
    """What the organization asks of its keys' lifetimes; null: the rule is off."""

    object: Literal["key_policy"] = "key_policy"
    org_id: str
    max_lifetime_seconds: Seconds | None
    require_expiry: Literal["none", "live", "all"]
    revoke_unused_after_seconds: Seconds | None
    unused_warning_seconds: Seconds

    @classmethod
    def of(cls, org_id: str, policy: LifetimePolicy) -> KeyPolicy:
        """The policy as the API shows it."""
        warning = int(policy.warning_lead().total_seconds())
        shown = {**policy.as_seconds(), "org_id": org_id, "unused_warning_seconds": warning}
        return msgspec.convert(shown, cls)
