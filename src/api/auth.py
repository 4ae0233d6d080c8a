"""Bearer-key authentication (Litestar's auth middleware) and permission guards."""

from __future__ import annotations

import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)

from adapters.rate_limiter import RateLimiter
from api.context import request_context
from api.errors import ApiError, unauthorized
from api.key_mirror import KeyMirror
from domain.key_format import MalformedKey, hash_key, parse_key
from projections.key_lookup import Principal

#: Failed-key attempts allowed per client address per minute before 429s.
FAILED_ATTEMPTS_PER_MINUTE = 30


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    """`Authorization: Bearer <key>` → the key's Principal, rate-limited per key."""

    def __init__(
        self,
        app: Any,
        *,
        mirror: KeyMirror,
        limiter: RateLimiter,
        pepper: bytes,
        exclude: list[str] | None = None,
    ) -> None:
        super().__init__(app, exclude=exclude)
        self.mirror = mirror
        self.limiter = limiter
        self.pepper = pepper

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        context = request_context(connection.scope)
        values = connection.headers.getall("authorization", [])
        if not values:
            raise unauthorized("missing_api_key", "send your key as Authorization: Bearer <key>")
        context.presented_key = True
        if len(values) > 1:
            raise unauthorized("malformed_api_key", "send exactly one Authorization header")
        scheme, _, token = values[0].strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized(
                "malformed_api_key", "the Authorization header must be: Bearer <key>"
            )
        try:
            parsed = parse_key(token.strip())
        except MalformedKey as error:
            await self._count_failure(context.client_addr)
            raise unauthorized("malformed_api_key", error.message) from None
        context.key_hint = parsed.hint
        key_hash = hash_key(parsed.text, self.pepper)
        record = self.mirror.get(key_hash) or await self.mirror.find(key_hash)
        if record is None:
            await self._count_failure(context.client_addr)
            raise unauthorized("invalid_api_key", "this API key is not valid")
        if record.revoked:
            raise unauthorized("api_key_revoked", "this API key was revoked")
        if record.expires_at is not None and record.expires_at <= time.time():
            raise unauthorized("api_key_expired", "this API key has expired")
        principal = self.mirror.lookup.principal(record)
        context.principal = principal
        decision = await self.limiter.hit(principal.key_id.hex, principal.rate_limit)
        context.rate_limit = decision
        if not decision.allowed:
            raise ApiError(
                429,
                "rate_limit_exceeded",
                f"this key may make {decision.limit} requests per minute; "
                f"retry in {decision.retry_after} s",
            )
        return AuthenticationResult(user=principal, auth=parsed)

    async def _count_failure(self, client_addr: str | None) -> None:
        decision = await self.limiter.hit(f"failed:{client_addr}", FAILED_ATTEMPTS_PER_MINUTE)
        if not decision.allowed:
            raise ApiError(
                429,
                "too_many_failed_attempts",
                f"too many invalid keys from this address; retry in {decision.retry_after} s",
                headers={"Retry-After": str(decision.retry_after)},
            )


def permission_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Refuse (403) a key lacking the permission the handler's `opt` names."""
    needed = handler.opt.get("permission")
    if needed is None:
        return
    principal: Principal = connection.user
    if needed not in principal.permissions:
        raise ApiError(
            403,
            "insufficient_permissions",
            f"this key lacks the {needed} permission",
        )
