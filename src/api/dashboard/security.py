"""The dashboard's browser security: sessions, CSRF, security headers, sign-in throttling.

- Sessions are Litestar's server-side sessions: the cookie holds a random id only; the data
  lives in Redis when `ICODRIP_REDIS_URL` is set (shared by every API process), in memory
  otherwise (the embedded default is one process).
- CSRF is Litestar's double-submit token (a `__Host-` cookie plus a form field or the
  `X-CSRFToken` header htmx sends), checked on the dashboard's router only: the Bearer API
  under `/v1` never passes through it.
- Every dashboard response carries a strict Content-Security-Policy (scripts and styles
  from our own static files only, no inline code), and is never cached.
- Failed sign-ins are counted per email and per client address with the API's rate limiter;
  past the limit, sign-ins for that email or from that address are refused (even with the
  right password) for a fixed lock-out, however close to the window's end the limit was hit.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.datastructures import ResponseHeader
from litestar.middleware.session.server_side import (
    ServerSideSessionBackend,
    ServerSideSessionConfig,
)
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from litestar.types import Empty, Message, ScopeSession
from litestar.utils.scope.state import ScopeState

from adapters.rate_limiter import RateLimiter

PREFIX = "/dashboard"
SESSION_STORE = "dashboard-sessions"
LOCK_STORE = "dashboard-sign-in-locks"
SESSION_COOKIE = "__Host-icodrip-session"
CSRF_COOKIE = "__Host-icodrip-csrf"
SESSION_MAX_AGE = 8 * 3600

#: Failed sign-ins allowed per window (one minute) before sign-ins are refused.
FAILED_SIGN_INS_PER_EMAIL = 5
FAILED_SIGN_INS_PER_ADDRESS = 20
#: How long sign-ins stay refused once a limit is passed.
SIGN_IN_LOCK_OUT_SECONDS = 5 * 60

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(name="Cache-Control", value="no-store"),
]


class DashboardSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side sessions, except that an anonymous visit stores nothing."""

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: Any
    ) -> None:
        anonymous = isinstance(scope_session, dict) and not scope_session
        if anonymous and not connection.cookies.get(self.config.key):
            return  # no session to keep, none to end: no store write, no cookie
        await super().store_in_message(scope_session, message, connection)


@dataclass
class DashboardSessionConfig(ServerSideSessionConfig):
    _backend_class = DashboardSessionBackend


def session_config() -> ServerSideSessionConfig:
    """Server-side sessions behind a Secure, HttpOnly, SameSite=Lax `__Host-` cookie."""
    return DashboardSessionConfig(
        key=SESSION_COOKIE,
        store=SESSION_STORE,
        max_age=SESSION_MAX_AGE,
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",
        renew_on_access=True,
    )


def csrf_config(pepper: bytes) -> CSRFConfig:
    """Double-submit CSRF tokens signed with a secret every API process derives alike."""
    secret = hmac.new(pepper, b"icodrip dashboard csrf", hashlib.sha256).hexdigest()
    return CSRFConfig(
        secret=secret,
        cookie_name=CSRF_COOKIE,
        cookie_path="/",
        cookie_secure=True,
        cookie_httponly=True,
        cookie_samesite="strict",
        header_name="x-csrftoken",
        exclude=[f"^{PREFIX}/static/"],
    )


def stores_for(redis_url: str | None) -> dict[str, Store]:
    """Sessions and sign-in locks: in Redis when configured, else in this process."""
    if redis_url:
        root = RedisStore.with_client(redis_url, namespace="icodrip-dashboard")
        return {
            SESSION_STORE: root.with_namespace("sessions"),
            LOCK_STORE: root.with_namespace("sign-in-locks"),
        }
    return {SESSION_STORE: MemoryStore(), LOCK_STORE: MemoryStore()}


class JoinCookieHeaders:
    """One `Cookie` header, as Litestar reads only the first of several.

    Over HTTP/2 (granian negotiates it with browsers) a client may send each cookie in a header
    of its own (RFC 9113, 8.2.3); joined with `; `, they read as HTTP/1.1 would send them.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            cookies = [value for name, value in scope["headers"] if name == b"cookie"]
            if len(cookies) > 1:
                others = [(name, value) for name, value in scope["headers"] if name != b"cookie"]
                scope["headers"] = [*others, (b"cookie", b"; ".join(cookies))]
                state = ScopeState.from_scope(scope)
                state.headers = Empty
                state.cookies = Empty
        await self.app(scope, receive, send)


@dataclass
class SignInThrottle:
    """Counts failed sign-ins; locks an email or an address out once it has too many."""

    limiter: RateLimiter
    locks: Store

    @staticmethod
    def _buckets(email: str, address: str | None) -> list[tuple[str, int]]:
        digest = hashlib.sha256(email.encode()).hexdigest()[:32]  # no emails in Redis keys
        return [
            (f"dashboard-sign-in:email:{digest}", FAILED_SIGN_INS_PER_EMAIL),
            (f"dashboard-sign-in:addr:{address or 'unknown'}", FAILED_SIGN_INS_PER_ADDRESS),
        ]

    async def locked_for(self, email: str, address: str | None) -> int | None:
        """Seconds left if sign-ins for this email or from this address are refused now."""
        for bucket, _ in self._buckets(email, address):
            left = await self.locks.expires_in(bucket)
            if left is not None and left > 0:
                return left
            if left is None and await self.locks.exists(bucket):
                return 60
        return None

    async def failed(self, email: str, address: str | None) -> int | None:
        """Count a failed sign-in; the seconds of lock-out when this one went past a limit."""
        locked: int | None = None
        for bucket, limit in self._buckets(email, address):
            decision = await self.limiter.hit(bucket, limit)
            if not decision.allowed:
                # Not just until the counting window ends: that may be a second away.
                seconds = max(decision.retry_after, SIGN_IN_LOCK_OUT_SECONDS)
                await self.locks.set(bucket, b"1", expires_in=seconds)
                locked = max(locked or 0, seconds)
        return locked
