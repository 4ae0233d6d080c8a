"""API keys and their lifecycle events, as the API answers them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from icodrip_client._models import fields as f
from icodrip_client._models.fields import Raw


@dataclass(frozen=True, slots=True, kw_only=True)
class Exposure:
    """One reason a key was flagged as possibly exposed: `browser`, `plain_http`, `leak_report`."""

    source: str
    detail: str

    @classmethod
    def from_dict(cls, raw: Raw) -> Exposure:
        return cls(source=f.opt_text(raw, "source") or "", detail=f.opt_text(raw, "detail") or "")


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """An API key. `key`, the secret, is only in the answers that issue one (create, roll).

    `raw` is the whole JSON object, fields this client does not know yet included.
    """

    id: str
    organization: str
    name: str
    env: str
    type: str
    hint: str
    status: str
    permissions: tuple[str, ...]
    restricted: bool
    allowed_origins: tuple[str, ...]
    allowed_ips: tuple[str, ...]
    exposed_at: datetime | None
    exposure: tuple[Exposure, ...]
    rate_limit_per_minute: int | None
    created_at: datetime
    created_by: str | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    revocation_reason: str | None
    rolled_from: str | None
    rolled_to: str | None
    #: A rolled key in its grace: revoked once unused this long (the roll's `revoke_when_idle`).
    revoke_when_idle_seconds: int | None = None
    #: An active key warned by the organization's unused-key rule: when it is revoked unless
    #: used before.
    unused_revocation_at: datetime | None = None
    # The secret never shows in a repr (logs, tracebacks): read it from `.key` once.
    key: str | None = field(default=None, repr=False)
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: Raw) -> ApiKey:
        return cls(
            id=f.text(raw, "id"),
            organization=f.text(raw, "organization"),
            name=f.text(raw, "name"),
            env=f.text(raw, "env"),
            type=f.text(raw, "type"),
            hint=f.text(raw, "hint"),
            status=f.text(raw, "status"),
            permissions=f.texts(raw, "permissions"),
            restricted=f.flag(raw, "restricted"),
            allowed_origins=f.texts(raw, "allowed_origins"),
            allowed_ips=f.texts(raw, "allowed_ips"),
            exposed_at=f.opt_time(raw, "exposed_at"),
            exposure=tuple(Exposure.from_dict(e) for e in f.objects(raw, "exposure")),
            rate_limit_per_minute=f.opt_int(raw, "rate_limit_per_minute"),
            created_at=f.time(raw, "created_at"),
            created_by=f.opt_text(raw, "created_by"),
            expires_at=f.opt_time(raw, "expires_at"),
            last_used_at=f.opt_time(raw, "last_used_at"),
            revoked_at=f.opt_time(raw, "revoked_at"),
            revoked_by=f.opt_text(raw, "revoked_by"),
            revocation_reason=f.opt_text(raw, "revocation_reason"),
            rolled_from=f.opt_text(raw, "rolled_from"),
            rolled_to=f.opt_text(raw, "rolled_to"),
            revoke_when_idle_seconds=f.opt_int(raw, "revoke_when_idle_seconds"),
            unused_revocation_at=f.opt_time(raw, "unused_revocation_at"),
            key=f.opt_text(raw, "key"),
            raw=raw,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleEvent:
    """A stored lifecycle event (`api_key.created`, `api_key.revoked`, ...).

    `position` is the feed's cursor (`audit.events`; None in a key's history); `changes` (a
    key's history only) maps each attribute the event changed to `{"from": ..., "to": ...}`.
    """

    type: str
    aggregate_id: str
    aggregate_version: int | None
    org_id: str | None
    actor: str | None
    occurred_at: datetime
    data: Raw
    position: int | None = None
    changes: Raw | None = None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: Raw) -> LifecycleEvent:
        data: Any = f.opt_obj(raw, "data")
        return cls(
            type=f.text(raw, "type"),
            aggregate_id=f.text(raw, "aggregate_id"),
            aggregate_version=f.opt_int(raw, "aggregate_version"),
            org_id=f.opt_text(raw, "org_id"),
            actor=f.opt_text(raw, "actor"),
            occurred_at=f.time(raw, "occurred_at"),
            data=data if data is not None else {},
            position=f.opt_int(raw, "position"),
            changes=f.opt_obj(raw, "changes"),
            raw=raw,
        )
