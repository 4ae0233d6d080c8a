"""`/v1/affiliates`: the organization's affiliates in the key's environment."""

from __future__ import annotations

from typing import Any

from icodrip_client._core import Call, Cursor, Listing, compact, path
from icodrip_client._models.fields import obj
from icodrip_client._models.records import Affiliate
from icodrip_client._resources._base import AsyncResource, SyncResource
from icodrip_client.pagination import AsyncPager, Page


def _affiliate(body: Any) -> Affiliate:
    return Affiliate.from_dict(obj(body))


def _listing(limit: int | None) -> Listing[Affiliate]:
    return Listing(path("affiliates"), Affiliate.from_dict, compact(limit=limit))


def _create(name: str, email: str | None, idempotency_key: str | None) -> Call[Affiliate]:
    body = compact(name=name, email=email)
    return Call("POST", path("affiliates"), _affiliate, body=body, idempotency_key=idempotency_key)


def _get(affiliate_id: str) -> Call[Affiliate]:
    return Call("GET", path("affiliates", affiliate_id), _affiliate)


class Affiliates(SyncResource):
    """The organization's affiliates (`client.affiliates`), oldest first."""

    def list(self, *, limit: int | None = None, cursor: Cursor | None = None) -> Page[Affiliate]:
        return self._page(_listing(limit), cursor)

    def create(
        self, *, name: str, email: str | None = None, idempotency_key: str | None = None
    ) -> Affiliate:
        return self._run(_create(name, email, idempotency_key))

    def get(self, affiliate_id: str) -> Affiliate:
        return self._run(_get(affiliate_id))


class AsyncAffiliates(AsyncResource):
    """The organization's affiliates (`client.affiliates`), oldest first."""

    def list(
        self, *, limit: int | None = None, cursor: Cursor | None = None
    ) -> AsyncPager[Affiliate]:
        return self._pager(_listing(limit), cursor)

    async def create(
        self, *, name: str, email: str | None = None, idempotency_key: str | None = None
    ) -> Affiliate:
        return await self._run(_create(name, email, idempotency_key))

    async def get(self, affiliate_id: str) -> Affiliate:
        return await self._run(_get(affiliate_id))
