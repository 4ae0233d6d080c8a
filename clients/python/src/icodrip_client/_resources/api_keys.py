"""`/v1/api-keys`: who am I, list, read, create, roll, revoke, rename, change allowed IPs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from icodrip_client._core import Call, Cursor, Listing, as_list, compact, path, rfc3339, whole
from icodrip_client._models.fields import obj
from icodrip_client._models.keys import ApiKey, LifecycleEvent
from icodrip_client._resources._base import AsyncResource, SyncResource
from icodrip_client.pagination import AsyncPager, Page


def _key(body: Any) -> ApiKey:
    return ApiKey.from_dict(obj(body))


def _current() -> Call[ApiKey]:
    return Call("GET", path("api-keys", "current"), _key)


def _listing(limit: int | None, as_of: datetime | str | None) -> Listing[ApiKey]:
    return Listing(path("api-keys"), ApiKey.from_dict, compact(limit=limit, as_of=rfc3339(as_of)))


def _get(key_id: str) -> Call[ApiKey]:
    return Call("GET", path("api-keys", key_id), _key)


def _history(key_id: str) -> Listing[LifecycleEvent]:
    return Listing(path("api-keys", key_id, "history"), LifecycleEvent.from_dict)


def _create(
    *,
    name: str,
    env: str | None,
    type: str | None,  # the API's word
    permissions: Iterable[str] | None,
    expires_at: datetime | str | None,
    allowed_origins: Iterable[str] | None,
    allowed_ips: Iterable[str] | None,
    idempotency_key: str | None,
) -> Call[ApiKey]:
    body = compact(
        name=name,
        env=env,
        type=type,
        permissions=as_list(permissions),
        expires_at=rfc3339(expires_at),
        allowed_origins=as_list(allowed_origins),
        allowed_ips=as_list(allowed_ips),
    )
    return Call("POST", path("api-keys"), _key, body=body, idempotency_key=idempotency_key)


MINUTE = timedelta(minutes=1)


def _roll(
    key_id: str,
    expire_in_seconds: int | None,
    expires_at: datetime | str | None,
    revoke_when_idle: timedelta | None,
    idempotency_key: str | None,
) -> Call[ApiKey]:
    idle = None if revoke_when_idle is None else whole(revoke_when_idle, MINUTE, "revoke_when_idle")
    body = (
        compact(
            expire_in_seconds=expire_in_seconds,
            expires_at=rfc3339(expires_at),
            revoke_when_idle_minutes=idle,
        )
        or None
    )
    return Call(
        "POST", path("api-keys", key_id, "roll"), _key, body=body, idempotency_key=idempotency_key
    )


def _revoke(key_id: str, reason: str | None, idempotency_key: str | None) -> Call[ApiKey]:
    body = compact(reason=reason) or None
    return Call(
        "POST", path("api-keys", key_id, "revoke"), _key, body=body, idempotency_key=idempotency_key
    )


def _update(key_id: str, name: str | None, allowed_ips: Iterable[str] | None) -> Call[ApiKey]:
    body = compact(name=name, allowed_ips=as_list(allowed_ips))
    return Call("PATCH", path("api-keys", key_id), _key, body=body)


class ApiKeys(SyncResource):
    """The organization's API keys (`client.api_keys`)."""

    def current(self) -> ApiKey:
        """The key this client calls with: its organization, environment, permissions, limit."""
        return self._run(_current())

    def list(
        self,
        *,
        limit: int | None = None,
        cursor: Cursor | None = None,
        as_of: datetime | str | None = None,
    ) -> Page[ApiKey]:
        """The keys, oldest first: the page at `cursor`; iterate over it for every key."""
        return self._page(_listing(limit, as_of), cursor)

    def get(self, key_id: str) -> ApiKey:
        return self._run(_get(key_id))

    def history(self, key_id: str) -> Page[LifecycleEvent]:
        """Every lifecycle event of the key, oldest first: who did what, when."""
        return self._page(_history(key_id), None)

    def create(
        self,
        *,
        name: str,
        env: str | None = None,
        type: str | None = None,  # the API's word
        permissions: Iterable[str] | None = None,
        expires_at: datetime | str | None = None,
        allowed_origins: Iterable[str] | None = None,
        allowed_ips: Iterable[str] | None = None,
        idempotency_key: str | None = None,
    ) -> ApiKey:
        """A new key; its secret is in `.key` this once."""
        return self._run(
            _create(
                name=name,
                env=env,
                type=type,
                permissions=permissions,
                expires_at=expires_at,
                allowed_origins=allowed_origins,
                allowed_ips=allowed_ips,
                idempotency_key=idempotency_key,
            )
        )

    def roll(
        self,
        key_id: str,
        *,
        expire_in_seconds: int | None = None,
        expires_at: datetime | str | None = None,
        revoke_when_idle: timedelta | None = None,
        idempotency_key: str | None = None,
    ) -> ApiKey:
        """The key's successor (secret in `.key`); the old key works for the grace period.

        `expire_in_seconds`: the grace (default a day). `expires_at`: the successor's expiry
        (default the old key's; the organization's policy may ask for one). `revoke_when_idle`
        (whole minutes, at most the grace): the old key is revoked as soon as it has not been
        used for this long, before the grace ends."""
        return self._run(
            _roll(key_id, expire_in_seconds, expires_at, revoke_when_idle, idempotency_key)
        )

    def revoke(
        self, key_id: str, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> ApiKey:
        return self._run(_revoke(key_id, reason, idempotency_key))

    def rename(self, key_id: str, name: str) -> ApiKey:
        return self._run(_update(key_id, name, None))

    def update(
        self, key_id: str, *, name: str | None = None, allowed_ips: Iterable[str] | None = None
    ) -> ApiKey:
        """Rename and/or replace the IP allowlist (`[]`: from anywhere)."""
        return self._run(_update(key_id, name, allowed_ips))


class AsyncApiKeys(AsyncResource):
    """The organization's API keys (`client.api_keys`)."""

    async def current(self) -> ApiKey:
        return await self._run(_current())

    def list(
        self,
        *,
        limit: int | None = None,
        cursor: Cursor | None = None,
        as_of: datetime | str | None = None,
    ) -> AsyncPager[ApiKey]:
        return self._pager(_listing(limit, as_of), cursor)

    async def get(self, key_id: str) -> ApiKey:
        return await self._run(_get(key_id))

    def history(self, key_id: str) -> AsyncPager[LifecycleEvent]:
        return self._pager(_history(key_id), None)

    async def create(
        self,
        *,
        name: str,
        env: str | None = None,
        type: str | None = None,  # the API's word
        permissions: Iterable[str] | None = None,
        expires_at: datetime | str | None = None,
        allowed_origins: Iterable[str] | None = None,
        allowed_ips: Iterable[str] | None = None,
        idempotency_key: str | None = None,
    ) -> ApiKey:
        return await self._run(
            _create(
                name=name,
                env=env,
                type=type,
                permissions=permissions,
                expires_at=expires_at,
                allowed_origins=allowed_origins,
                allowed_ips=allowed_ips,
                idempotency_key=idempotency_key,
            )
        )

    async def roll(
        self,
        key_id: str,
        *,
        expire_in_seconds: int | None = None,
        expires_at: datetime | str | None = None,
        revoke_when_idle: timedelta | None = None,
        idempotency_key: str | None = None,
    ) -> ApiKey:
        return await self._run(
            _roll(key_id, expire_in_seconds, expires_at, revoke_when_idle, idempotency_key)
        )

    async def revoke(
        self, key_id: str, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> ApiKey:
        return await self._run(_revoke(key_id, reason, idempotency_key))

    async def rename(self, key_id: str, name: str) -> ApiKey:
        return await self._run(_update(key_id, name, None))

    async def update(
        self, key_id: str, *, name: str | None = None, allowed_ips: Iterable[str] | None = None
    ) -> ApiKey:
        return await self._run(_update(key_id, name, allowed_ips))
