"""The API key object, its lists and its lifecycle history, as the API answers them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType


class Exposure(msgspec.Struct, kw_only=True):
    """Where a key was found exposed: the report's source and what it said."""

    source: str
    detail: str


class ApiKey(msgspec.Struct, kw_only=True):
    """An API key; `key` (its secret) only in the answer that issued it."""

    id: str
    object: Literal["api_key"] = "api_key"
    organization: str
    name: str
    env: Literal["live", "test"]
    type: Literal["secret", "public"]
    hint: str
    status: Literal["active", "expiring", "expired", "revoked"]
    permissions: list[str]
    restricted: bool
    allowed_origins: list[str]
    allowed_ips: list[str]
    exposed_at: datetime | None
    exposure: list[Exposure]
    rate_limit_per_minute: int
    created_at: datetime
    created_by: str | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    revocation_reason: str | None
    rolled_from: str | None
    rolled_to: str | None
    #: A rolled key in its grace that goes once unused this long (`revoke_when_idle`).
    revoke_when_idle_seconds: int | None = None
    #: When the system revokes this active key for being unused, as it warned (a use since
    #: the warning cancels it): the org's `revoke_unused_after` rule.
    unused_revocation_at: datetime | None = None
    key: str | UnsetType = UNSET


class ApiKeyList(msgspec.Struct, kw_only=True):
    """A page of keys, oldest first; `as_of` when they are the keys of a past instant."""

    object: Literal["list"] = "list"
    data: list[ApiKey]
    next_cursor: str | None
    as_of: datetime | UnsetType = UNSET


class LifecycleEvent(msgspec.Struct, kw_only=True):
    """A stored lifecycle event as the public feed and a key's history show it.

    `position` is the feed's cursor (absent from a key's history); `changes` (history only)
    maps each public attribute the event changed to `{"from": …, "to": …}`.
    """

    object: Literal["event"] = "event"
    v: int
    position: int | UnsetType = UNSET
    type: str
    aggregate_id: str
    aggregate_version: int
    org_id: str
    actor: str
    occurred_at: datetime
    data: dict[str, Any]
    changes: dict[str, Any] | UnsetType = UNSET


class LifecycleEventList(msgspec.Struct, kw_only=True):
    """Lifecycle events in log order; continue with `after=next_cursor` while it is not null."""

    object: Literal["list"] = "list"
    data: list[LifecycleEvent]
    next_cursor: int | None
