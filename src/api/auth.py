"""The key gate: Bearer-key authentication, limits and the access policy, before Litestar."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import structlog

from adapters.rate_limiter import RateLimiter
from api.context import RequestContext, request_context
from api.errors import (
    STORE_ERRORS,
    ApiError,
    domain_error_status,
    internal_error,
    send_error,
    store_unavailable,
    unauthorized,
)
from api.exposure import ExposureFlagger
from api.key_mirror import KeyMirror
from api.store_health import StoreHealth
from domain.access import Command, authorize
from domain.errors import DomainError
from domain.key_format import KeyType, MalformedKey, hash_key, parse_key, redact_keys
from domain.key_states import ExposureSource
from domain.rate_limits import PER_ADDRESS, RateLimitDecision
from projections.key_lookup import KeyRecord, Principal

#: `route_command` answers for a route that needs no key, and for a `/v1` handler that
#: declares no command (refused: a route added without thought for access fails closed).
NO_KEY, UNDECLARED = object(), object()
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
_SECRET, _PUBLIC = KeyType.SECRET.value, KeyType.PUBLIC.value


class KeyGate:
    """Raw ASGI in front of Litestar: authenticates every request whose route needs a key,
    and asks the access policy, once, whether that key may run the route's command.

    A refusal is answered here, in the contract's error shape, without entering Litestar; an
    admitted request reaches it with the principal in `scope["user"]` (Litestar's
    `request.user`). `route_command(path, method)` (`api.app.route_commands`) tells what each
    route needs: `NO_KEY`, a `Command`, `None` (any valid key) or `UNDECLARED` (refused, 500).
    A failure on the way (the store unreachable on a mirror miss) is answered as Litestar's
    own handlers would: 503 `store_unavailable` (and the store marked down), else 500.
    """

    def __init__(
        self,
        app: Any,
        *,
        authenticator: KeyAuthenticator,
        route_command: Callable[[str, str], object],
        store_health: StoreHealth | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.route_command = route_command
        self.store_health = store_health

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            command = self.route_command(scope["path"], scope["method"])
            if command is not NO_KEY:
                context = request_context(scope)
                try:
                    principal = await self.authenticator.authenticate(scope, context)
                    if command is UNDECLARED:
                        log.error("access.undeclared_command", path=redact_keys(scope["path"]))
                        raise ApiError(500, "internal_error", "this route declares no access rule")
                    if command is not None:
                        authorize(principal, cast(Command, command))
                except ApiError as refusal:
                    await _refuse(
                        send,
                        context,
                        refusal.status_code,
                        refusal.code,
                        str(refusal.detail),
                        refusal.headers,
                    )
                    return
                except DomainError as refusal:
                    await _refuse(
                        send,
                        context,
                        domain_error_status(refusal),
                        refusal.code,
                        refusal.message,
                        None,
                    )
                    return
                except Exception as failure:
                    await self._fail(send, context, failure)
                    return
                scope["user"] = principal
        await self.app(scope, receive, send)

    async def _fail(self, send: Any, context: RequestContext, failure: Exception) -> None:
        error = type(failure).__name__
        if isinstance(failure, STORE_ERRORS):
            log.warning("api.store_unavailable", error=error, request_id=context.request_id)
            if self.store_health is not None:  # later misses answer at once until it is back
                self.store_health.mark_down()
            answer = store_unavailable()
        else:
            log.error("api.unhandled_error", error=error, request_id=context.request_id)
            answer = internal_error()
        await _refuse(
            send, context, answer.status_code, answer.code, str(answer.detail), answer.headers
        )


async def _refuse(
    send: Any,
    context: RequestContext,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None,
) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send_error(send, status, code, message, context.request_id, raw)


class KeyAuthenticator:
    """`Authorization: Bearer <key>` → the key's Principal, rate-limited per key.

    Called by `KeyGate` for every route that needs a key: one pass over the raw headers, and
    the key's principal kept per key hash until the mirror changes, so a known key costs a
    hash, a dict hit and its limit.
    """

    def __init__(
        self,
        *,
        mirror: KeyMirror,
        limiter: RateLimiter,
        pepper: bytes,
        exposure: ExposureFlagger | None = None,
        store_health: StoreHealth | None = None,
    ) -> None:
        self.mirror = mirror
        self.limiter = limiter
        self.pepper = pepper
        self.exposure = exposure
        self.store_health = store_health
        self._known: dict[str, tuple[KeyRecord, Principal]] = {}
        mirror.listeners.append(self._forget)

    def _forget(self, _changed: object) -> None:
        # Any change may revoke, restrict or re-plan a key: start from the mirror again.
        self._known.clear()

    async def authenticate(self, scope: Any, context: RequestContext) -> Principal:
        """The request's principal; raises `ApiError` (401/403/429/503) when refused."""
        authorization: list[bytes] = []
        origin_raw = fetch_raw = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization.append(value)
            elif name == b"origin":
                origin_raw = value
            elif name == b"sec-fetch-mode":
                fetch_raw = value
        if not authorization:
            raise unauthorized("missing_api_key", "send your key as Authorization: Bearer <key>")
        context.presented_key = True
        if len(authorization) > 1:
            raise unauthorized("malformed_api_key", "send exactly one Authorization header")
        token = bearer_token(authorization[0])
        if not token:
            raise unauthorized(
                "malformed_api_key", "the Authorization header must be: Bearer <key>"
            )
        # A key this process already admitted is known by its hash: no parsing again.
        key_hash = hash_key(token, self.pepper) if token.isascii() else ""
        known = self._known.get(key_hash)
        if known is None:
            try:
                parsed = parse_key(token)
            except MalformedKey as error:
                await self._count_failure(context.client_addr)
                raise unauthorized("malformed_api_key", error.message) from None
            context.key_hint = parsed.hint
            record = self.mirror.get(key_hash) or await self._find(key_hash, context)
            if record is None:
                await self._count_failure(context.client_addr)
                raise unauthorized("invalid_api_key", "this API key is not valid")
            principal = self.mirror.lookup.principal(record)
            if not record.revoked:
                if len(self._known) >= 100_000:
                    self._known.clear()
                self._known[key_hash] = (record, principal)
        else:
            record, principal = known
            context.key_hint = principal.hint
        if record.revoked:
            if record.expired:  # retired by the expiry worker: the answer it had just before
                raise unauthorized("api_key_expired", "this API key has expired")
            raise unauthorized("api_key_revoked", "this API key was revoked")
        if record.expires_at is not None and record.expires_at <= time.time():
            raise unauthorized("api_key_expired", "this API key has expired")
        context.principal = principal
        origin = None if origin_raw is None else origin_raw.decode("latin-1")
        fetch_mode = "" if fetch_raw is None else fetch_raw.decode("latin-1").lower()
        self._refuse_misuse(scope["path"], origin, fetch_mode, record, context)
        if record.type == _PUBLIC:
            # The address's own limit first: a request it refuses must not spend the quota
            # that the key's other visitors share.
            per_address = await self.limiter.hit(
                f"pk:{principal.limit_key}:{context.client_addr}",
                PUBLIC_KEY_PER_ADDRESS_PER_MINUTE,
            )
            if not per_address.allowed:
                raise over_limit(
                    context,
                    replace(per_address, policy=PER_ADDRESS),
                    f"this public key may make {per_address.limit} requests per minute from "
                    f"one address; retry in {per_address.retry_after} s",
                )
        decision = await self.limiter.hit(principal.limit_key, principal.rate_limit)
        if not decision.allowed:
            raise over_limit(
                context,
                decision,
                f"this key may make {decision.limit} requests per minute; "
                f"retry in {decision.retry_after} s",
            )
        context.rate_limit = decision
        return principal

    async def _find(self, key_hash: str, context: RequestContext) -> KeyRecord | None:
        """A key the mirror lacks, from the durable view; while the store is down, 503 at once
        (rather than a thread held for the store's half-minute of retries), counted as a
        failed attempt: an outage must not lift the limit on guessing keys."""
        if self.mirror.known_missing(key_hash):
            return None
        if self.store_health is not None and self.store_health.down:
            await self._count_failure(context.client_addr)
            raise store_unavailable()
        return await self.mirror.find(key_hash)

    def _refuse_misuse(
        self,
        path: str,
        origin: str | None,
        fetch_mode: str,
        record: KeyRecord,
        context: RequestContext,
    ) -> None:
        """403 for a key used where it must not be: see docs/adr/0009."""
        if record.type == _SECRET:
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
            if path not in PUBLIC_KEY_PATHS:
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
                raise limiter_unavailable(decision)
            raise ApiError(
                429,
                "too_many_failed_attempts",
                f"too many invalid keys from this address; retry in {decision.retry_after} s",
                headers={"Retry-After": str(decision.retry_after)},
            )


def bearer_token(authorization: bytes) -> str:
    """The key an `Authorization: Bearer <key>` header presents ("" for any other header)."""
    scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def over_limit(context: RequestContext, decision: RateLimitDecision, message: str) -> ApiError:
    """The refusal for a hit `decision` did not admit: 429 with its headers, or 503."""
    if decision.unavailable:
        return limiter_unavailable(decision)
    context.rate_limit = decision
    return ApiError(429, "rate_limit_exceeded", message)


def limiter_unavailable(decision: RateLimitDecision) -> ApiError:
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
