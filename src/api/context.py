"""Per-request facts shared by the edge middleware, authentication and handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.rate_limits import RateLimitDecision
from projections.key_lookup import Principal

SCOPE_KEY = "icodrip"


@dataclass(slots=True)
class RequestContext:
    request_id: str
    started: float
    client_addr: str | None
    presented_key: bool = False
    key_hint: str | None = None
    principal: Principal | None = None
    rate_limit: RateLimitDecision | None = None


def request_context(scope: Any) -> RequestContext:
    """The context the edge middleware put on this request's scope."""
    return scope[SCOPE_KEY]  # type: ignore[no-any-return]
