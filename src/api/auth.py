"""Bearer-key authentication (Litestar's auth middleware) and permission guards."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import replace
from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)

from adapters.rate_limiter import RateLimiter
from api.context import RequestContext, request_context
from api.errors import ApiError, unauthorized
from api.exposure import ExposureFlagger
from api.key_mirror import KeyMirror
from domain.access import authorize
from domain.api_key import ExposureSource
from domain.key_format import KeyType, MalformedKey, hash_key, parse_key
from domain.rate_limits import PER_ADDRESS, RateLimitDecision
from projections.key_lookup import KeyRecord

_UNDECLARED = object()
log = structlog.get_logger()

#: Failed-key attempts allowed per client address per minute before 429s.
FAILED_ATTEMPTS_PER_MINUTE = 30
#: Requests one client address may make per minute with one public key (besides the key's
#: own limit), so a single browser or script cannot use up a public key's quota.
PUBLIC_KEY_PER_ADDRESS_PER_MINUTE = 60
#: The only routes a public key may call.
PUBLIC_KEY_PATHS = frozenset({"/v1/events", "/v1/events/"})
#: `Sec-Fetch-Mode` values only browsers send (server-side clients send none).
BROWSER_FETCH_MODES = frozenset({"cors", "no-cors", "navigate", "same-origin", "websocket"})


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
        exposure: ExposureFlagger | None = None,
    ) -> None:
        super().__init__(app, exclude=exclude)
        self.mirror = mirror
        self.limiter = limiter
        self.pepper = pepper
        self.exposure = exposure

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
            if record.expired:  # retired by the expiry worker: the answer it had just before
                raise unauthorized("api_key_expired", "this API key has expired")
            raise unauthorized("api_key_revoked", "this API key was revoked")
        if record.expires_at is not None and record.expires_at <= time.time():
            raise unauthorized("api_key_expired", "this API key has expired")
        principal = self.mirror.lookup.principal(record)
        context.principal = principal
        self._refuse_misuse(connection, record, context)
        if record.type == KeyType.PUBLIC.value:
            # The address's own limit first: a request it refuses must not spend the quota
            # that the key's other visitors share.
            per_address = await self.limiter.hit(
                f"pk:{principal.key_id.hex}:{context.client_addr}",
                PUBLIC_KEY_PER_ADDRESS_PER_MINUTE,
            )
            if not per_address.allowed:
                raise _over_limit(
                    context,
                    replace(per_address, policy=PER_ADDRESS),
                    f"this public key may make {per_address.limit} requests per minute from "
                    f"one address; retry in {per_address.retry_after} s",
                )
        decision = await self.limiter.hit(principal.key_id.hex, principal.rate_limit)
        if not decision.allowed:
            raise _over_limit(
                context,
                decision,
                f"this key may make {decision.limit} requests per minute; "
                f"retry in {decision.retry_after} s",
            )
        context.rate_limit = decision
        return AuthenticationResult(user=principal, auth=parsed)

    def _refuse_misuse(
        self,
        connection: ASGIConnection[Any, Any, Any, Any],
        record: KeyRecord,
        context: RequestContext,
    ) -> None:
        """403 for a key used where it must not be: see docs/adr/0009."""
        origin = connection.headers.get("origin")
        if record.type == KeyType.SECRET.value:
            fetch_mode = (connection.headers.get("sec-fetch-mode") or "").lower()
            if origin is not None or fetch_mode in BROWSER_FETCH_MODES:
                if self.exposure is not None:
                    detail = f"origin {origin[:200]}" if origin else f"sec-fetch-mode {fetch_mode}"
                    self.exposure.flag(record.key_id, ExposureSource.BROWSER, detail)
                raise ApiError(
                    403,
                    "secret_key_in_browser",
                    "secret keys must never be used from a browser; this key is now flagged as "
                    "possibly exposed: roll it, and use a public key (pk_…) in client-side code",
                )
        else:
            if connection.scope["path"] not in PUBLIC_KEY_PATHS:
                raise ApiError(
                    403,
                    "public_key_not_allowed",
                    "a public key may only send tracking events (POST /v1/events)",
                )
            if origin is not None and origin.lower() not in record.allowed_origins:
                raise ApiError(
                    403, "origin_not_allowed", "this public key is not allowed from this origin"
                )
        if record.allowed_ips and not _address_allowed(context.client_addr, record.allowed_ips):
            raise ApiError(
                403, "ip_not_allowed", "this key is not allowed from this client address"
            )

    async def _count_failure(self, client_addr: str | None) -> None:
        decision = await self.limiter.hit(f"failed:{client_addr}", FAILED_ATTEMPTS_PER_MINUTE)
        if not decision.allowed:
            if decision.unavailable:
                # Not a 401 either: a guesser must not tell a wrong key (401) from a right one
                # (503) while the limiter is down.
                raise _limiter_unavailable(decision)
            raise ApiError(
                429,
                "too_many_failed_attempts",
                f"too many invalid keys from this address; retry in {decision.retry_after} s",
                headers={"Retry-After": str(decision.retry_after)},
            )


def _over_limit(context: RequestContext, decision: RateLimitDecision, message: str) -> ApiError:
    """The refusal for a hit `decision` did not admit: 429 with its headers, or 503."""
    if decision.unavailable:
        return _limiter_unavailable(decision)
    context.rate_limit = decision
    return ApiError(429, "rate_limit_exceeded", message)


def _limiter_unavailable(decision: RateLimitDecision) -> ApiError:
    # No rate-limit headers: nothing was counted, so any numbers in them would be made up.
    return ApiError(
        503,
        "rate_limiter_unavailable",
        "rate limits cannot be checked right now, so requests are refused; "
        f"retry in {decision.retry_after} s",
        headers={"Retry-After": str(decision.retry_after)},
    )


def _address_allowed(addr: str | None, networks: tuple[str, ...]) -> bool:
    if addr is None:
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(network) for network in networks)


async def access_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Ask the access policy whether the key may run the command the handler's `opt` names.

    A `/v1` handler that names none (not even `None`, "any valid key") is refused: a route
    added without thought for access fails closed.
    """
    # Async on purpose: Litestar runs a sync guard in a worker thread, a thread hop per request.
    command = handler.opt.get("command", _UNDECLARED)
    if command is _UNDECLARED:
        if connection.scope["path"].startswith("/v1"):
            log.error("access.undeclared_command", route=connection.scope.get("path_template"))
            raise ApiError(500, "internal_error", "this route declares no access rule")
    elif command is not None:
        authorize(connection.user, command)
