"""`GET /v1/usage`: each key's requests per minute, hour or day, with the window's totals."""

from __future__ import annotations

from datetime import datetime

from icodrip_client._core import Call, Cursor, Listing, Params, compact, path, rfc3339
from icodrip_client._models.fields import obj
from icodrip_client._models.records import UsageReport, UsageRow
from icodrip_client._resources._base import AsyncResource, SyncResource
from icodrip_client.pagination import AsyncPager, Page

Time = datetime | str | None


def _params(
    start: Time,
    end: Time,
    granularity: str | None,
    key_id: str | None,
    env: str | None,
    limit: int | None,
) -> Params:
    return compact(
        granularity=granularity,
        key_id=key_id,
        env=env,
        limit=limit,
        **{"from": rfc3339(start), "to": rfc3339(end)},
    )


def _report(params: Params, cursor: Cursor | None) -> Call[UsageReport]:
    query = {**params, **compact(cursor=cursor)}
    return Call("GET", path("usage"), lambda raw: UsageReport.from_dict(obj(raw)), params=query)


def _rows(params: Params) -> Listing[UsageRow]:
    return Listing(path("usage"), UsageRow.from_dict, params)


class Usage(SyncResource):
    """Requests per key and bucket (`client.usage`); `start`/`end` are the API's `from`/`to`."""

    def get(
        self,
        *,
        start: Time = None,
        end: Time = None,
        granularity: str | None = None,
        key_id: str | None = None,
        env: str | None = None,
        limit: int | None = None,
        cursor: Cursor | None = None,
    ) -> UsageReport:
        """One page: its rows, the window's totals and `next_cursor`."""
        params = _params(start, end, granularity, key_id, env, limit)
        return self._run(_report(params, cursor))

    def list(
        self,
        *,
        start: Time = None,
        end: Time = None,
        granularity: str | None = None,
        key_id: str | None = None,
        env: str | None = None,
        limit: int | None = None,
    ) -> Page[UsageRow]:
        """The window's rows; iterate over the page for the rows of every page."""
        params = _params(start, end, granularity, key_id, env, limit)
        return self._page(_rows(params), None)


class AsyncUsage(AsyncResource):
    """Requests per key and bucket (`client.usage`); `start`/`end` are the API's `from`/`to`."""

    async def get(
        self,
        *,
        start: Time = None,
        end: Time = None,
        granularity: str | None = None,
        key_id: str | None = None,
        env: str | None = None,
        limit: int | None = None,
        cursor: Cursor | None = None,
    ) -> UsageReport:
        params = _params(start, end, granularity, key_id, env, limit)
        return await self._run(_report(params, cursor))

    def list(
        self,
        *,
        start: Time = None,
        end: Time = None,
        granularity: str | None = None,
        key_id: str | None = None,
        env: str | None = None,
        limit: int | None = None,
    ) -> AsyncPager[UsageRow]:
        params = _params(start, end, granularity, key_id, env, limit)
        return self._pager(_rows(params), None)
