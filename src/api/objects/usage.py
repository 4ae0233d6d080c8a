"""Requests per key per bucket, as `GET /v1/usage` answers them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec


class UsageCounts(msgspec.Struct, kw_only=True):
    """What keys did in a bucket or a window: `rate_limited` (429) and `refused` (401, 403)
    are among the `client_errors`; percentiles in ms, null without requests."""

    requests: int
    success: int
    client_errors: int
    server_errors: int
    rate_limited: int
    refused: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class UsageBucket(UsageCounts, kw_only=True):
    """One key's bucket, starting at `start` (UTC)."""

    start: datetime
    key_id: str


class UsageReport(msgspec.Struct, kw_only=True):
    """A window's rows by key, then time (sparse), and its totals."""

    object: Literal["usage"] = "usage"
    granularity: Literal["minute", "hour", "day"]
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    env: str | None
    totals: UsageCounts
    data: list[UsageBucket]
    next_cursor: str | None
