"""A request made with a key, as the hash-chained request audit records it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec


class AuditRequest(msgspec.Struct, kw_only=True):
    """One request; `organization` is null for a request whose key was unknown."""

    id: str
    object: Literal["audit_request"] = "audit_request"
    occurred_at: datetime
    occurred_at_unix: float
    organization: str | None
    key_id: str | None
    key_hint: str | None
    env: str | None
    method: str
    route: str
    path: str
    status: int
    client_addr: str | None
    user_agent: str | None
    latency_ms: float
    request_id: str
    sequence: int
    prev_hash: str
    row_hash: str


class AuditRequestList(msgspec.Struct, kw_only=True):
    """Requests newest first; continue with `cursor=next_cursor` while it is not null."""

    object: Literal["list"] = "list"
    data: list[AuditRequest]
    next_cursor: str | None
