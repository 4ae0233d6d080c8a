"""The affiliate object and its list."""

from __future__ import annotations

from typing import Literal

import msgspec


class Affiliate(msgspec.Struct, kw_only=True):
    """An affiliate of the organization in one environment; `created_at` in Unix seconds."""

    id: str
    object: Literal["affiliate"] = "affiliate"
    name: str
    email: str | None
    env: Literal["live", "test"]
    created_at: float


class AffiliateList(msgspec.Struct, kw_only=True):
    """Affiliates oldest first; continue with `cursor=next_cursor` while it is not null."""

    object: Literal["list"] = "list"
    data: list[Affiliate]
    next_cursor: str | None
