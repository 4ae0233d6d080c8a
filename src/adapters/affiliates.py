"""The affiliates store: the example resource, scoped to an organization and an environment."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from adapters import scoped_rows
from adapters.scoped_rows import ScopedRows
from adapters.settings import Settings


@dataclass(frozen=True, slots=True)
class Affiliate:
    id: str
    org_id: str
    env: str
    name: str
    email: str | None
    created_at: float
    seq: int


def encode_cursor(seq: int) -> str:
    return scoped_rows.encode_cursor("a", seq)


def decode_cursor(cursor: str) -> int:
    """The position a cursor of `GET /v1/affiliates` stands for; ValueError when it is not one."""
    return scoped_rows.decode_cursor("a", cursor)


class AffiliateStore:
    """Affiliates per organization and environment (`adapters.scoped_rows`)."""

    def __init__(self, settings: Settings) -> None:
        self._rows = ScopedRows(
            settings,
            "affiliates",
            [
                ("id", "text UNIQUE NOT NULL"),
                ("org_id", "text NOT NULL"),
                ("env", "text NOT NULL"),
                ("name", "text NOT NULL"),
                ("email", "text"),
                ("created_at", "double precision NOT NULL"),
            ],
        )

    def add(self, org_id: str, env: str, name: str, email: str | None) -> Affiliate:
        values = (f"aff_{uuid.uuid4().hex}", org_id, env, name, email, time.time())
        return Affiliate(*self._rows.insert(values))

    def get(self, org_id: str, env: str, affiliate_id: str) -> Affiliate | None:
        row = self._rows.get(org_id, env, affiliate_id)
        return None if row is None else Affiliate(*row)

    def page(self, org_id: str, env: str, after: int, limit: int) -> list[Affiliate]:
        return [Affiliate(*row) for row in self._rows.page(org_id, env, after, limit)]

    def close(self) -> None:
        self._rows.close()


def open_affiliate_store(settings: Settings) -> AffiliateStore:
    return AffiliateStore(settings)
