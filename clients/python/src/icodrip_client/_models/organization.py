"""The organization's settings a key may read: its key-lifetime policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from icodrip_client._models import fields as f
from icodrip_client._models.fields import Raw


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPolicy:
    """What the organization asks of its keys' lifetimes (`client.organization.policy()`).

    `max_lifetime_seconds`: keys created or rolled must expire within this long;
    `require_expiry`: which keys must expire at all (`none`, `live` or `all`);
    `revoke_unused_after_seconds`: keys unused this long are revoked by the system, each warned
    `unused_warning_seconds` before. None: the rule is off. `max_lifetime`,
    `revoke_unused_after` and `unused_warning` are the same durations as `timedelta`s.
    """

    org_id: str
    max_lifetime_seconds: int | None
    require_expiry: str
    revoke_unused_after_seconds: int | None
    unused_warning_seconds: int
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @property
    def max_lifetime(self) -> timedelta | None:
        return _duration(self.max_lifetime_seconds)

    @property
    def revoke_unused_after(self) -> timedelta | None:
        return _duration(self.revoke_unused_after_seconds)

    @property
    def unused_warning(self) -> timedelta:
        return timedelta(seconds=self.unused_warning_seconds)

    @classmethod
    def from_dict(cls, raw: Raw) -> KeyPolicy:
        return cls(
            org_id=f.text(raw, "org_id"),
            max_lifetime_seconds=f.opt_int(raw, "max_lifetime_seconds"),
            require_expiry=f.text(raw, "require_expiry"),
            revoke_unused_after_seconds=f.opt_int(raw, "revoke_unused_after_seconds"),
            unused_warning_seconds=f.integer(raw, "unused_warning_seconds"),
            raw=raw,
        )


def _duration(seconds: int | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)
