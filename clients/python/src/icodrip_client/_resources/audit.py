"""`/v1/audit`: the organization's lifecycle event feed and which key made which request."""

from __future__ import annotations

from datetime import datetime

from icodrip_client._core import Cursor, Listing, compact, path, rfc3339
from icodrip_client._models.keys import LifecycleEvent
from icodrip_client._models.records import AuditRequest
from icodrip_client._resources._base import AsyncResource, SyncResource
from icodrip_client.pagination import AsyncPager, Page

Time = datetime | str | None


def _events(limit: int | None) -> Listing[LifecycleEvent]:
    # The feed's cursor is a position, passed back as `after`.
    return Listing(path("audit", "events"), LifecycleEvent.from_dict, compact(limit=limit), "after")


def _requests(
    key_id: str | None,
    status: int | str | None,
    method: str | None,
    route: str | None,
    since: Time,
    until: Time,
    env: str | None,
    limit: int | None,
) -> Listing[AuditRequest]:
    params = compact(
        key_id=key_id,
        status=None if status is None else str(status),
        method=method,
        route=route,
        since=rfc3339(since),
        until=rfc3339(until),
        env=env,
        limit=limit,
    )
    return Listing(path("audit", "requests"), AuditRequest.from_dict, params)


class Audit(SyncResource):
    """The audit log (`client.audit`); needs `audit:read`."""

    def events(self, *, after: int | None = None, limit: int | None = None) -> Page[LifecycleEvent]:
        """Lifecycle events after a position, oldest first; iterating stops once caught up
        (poll again later with `after=` the last event's `position`)."""
        return self._page(_events(limit), after)

    def requests(
        self,
        *,
        key_id: str | None = None,
        status: int | str | None = None,
        method: str | None = None,
        route: str | None = None,
        since: Time = None,
        until: Time = None,
        env: str | None = None,
        limit: int | None = None,
        cursor: Cursor | None = None,
    ) -> Page[AuditRequest]:
        """Requests made with the organization's keys, newest first; `status` is `404` or
        a class such as `"4xx"`."""
        listing = _requests(key_id, status, method, route, since, until, env, limit)
        return self._page(listing, cursor)


class AsyncAudit(AsyncResource):
    """The audit log (`client.audit`); needs `audit:read`."""

    def events(
        self, *, after: int | None = None, limit: int | None = None
    ) -> AsyncPager[LifecycleEvent]:
        return self._pager(_events(limit), after)

    def requests(
        self,
        *,
        key_id: str | None = None,
        status: int | str | None = None,
        method: str | None = None,
        route: str | None = None,
        since: Time = None,
        until: Time = None,
        env: str | None = None,
        limit: int | None = None,
        cursor: Cursor | None = None,
    ) -> AsyncPager[AuditRequest]:
        listing = _requests(key_id, status, method, route, since, until, env, limit)
        return self._pager(listing, cursor)
