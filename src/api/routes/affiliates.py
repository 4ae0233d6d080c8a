"""`/v1/affiliates`: the example resource, scoped to the key's organization and environment."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from adapters.affiliates import Affiliate as StoredAffiliate
from adapters.affiliates import decode_cursor, encode_cursor
from api.errors import ApiError
from api.objects.affiliates import Affiliate, AffiliateList
from api.services import Services
from domain.access import Command
from projections.key_lookup import Principal


class NewAffiliate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    email: Annotated[str, msgspec.Meta(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None


def affiliate_view(affiliate: StoredAffiliate) -> Affiliate:
    return msgspec.convert(affiliate, Affiliate, from_attributes=True)


class AffiliatesController(Controller):
    path = "/v1/affiliates"
    tags = ["affiliates"]
    security = [{"BearerAuth": []}]

    @get("/", opt={"command": Command.READ_AFFILIATES})
    async def list_affiliates(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        cursor: FromQuery[str | None] = None,
    ) -> AffiliateList:
        """The organization's affiliates in this key's environment, oldest first."""
        principal = request.user
        try:
            after = decode_cursor(cursor) if cursor else 0
        except ValueError:
            raise ApiError(422, "validation_error", "cursor: not a cursor from this API") from None
        rows = await asyncio.to_thread(
            services.affiliates.page,
            principal.org_id_text,
            principal.env.value,
            after,
            limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return AffiliateList(
            data=[affiliate_view(a) for a in rows],
            next_cursor=encode_cursor(rows[-1].seq) if more else None,
        )

    @post("/", opt={"command": Command.WRITE_AFFILIATES})
    async def create_affiliate(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        data: JSONBody[NewAffiliate],
    ) -> Affiliate:
        """Add an affiliate to the organization, in this key's environment."""
        principal = request.user
        affiliate = await asyncio.to_thread(
            services.affiliates.add,
            principal.org_id_text,
            principal.env.value,
            data.name,
            data.email,
        )
        return affiliate_view(affiliate)

    @get("/{affiliate_id:str}", opt={"command": Command.READ_AFFILIATES})
    async def get_affiliate(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        affiliate_id: FromPath[str],
    ) -> Affiliate:
        """One affiliate; another org's or environment's is simply not found."""
        principal = request.user
        affiliate = await asyncio.to_thread(
            services.affiliates.get,
            principal.org_id_text,
            principal.env.value,
            affiliate_id,
        )
        if affiliate is None:
            raise ApiError(404, "not_found", "no such affiliate")
        return affiliate_view(affiliate)
