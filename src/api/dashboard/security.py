"""The dashboard's browser security: sessions, CSRF, security headers, sign-in throttling.

- Sessions are Litestar's server-side sessions: the cookie holds a random id only; the data
  lives in Redis when `ICODRIP_REDIS_URL` is set (shared by every API process), in memory
  otherwise (the embedded default is one process).
- CSRF is a double-submit token (a `__Host-` cookie plus a form field or the `X-CSRFToken`
  header htmx sends) that is also bound to the session it was issued to (HMAC over the
  session id), checked on the dashboard's router only: the Bearer API under `/v1` never
  passes through it.
- Every dashboard response, error pages and static files included, carries a strict
  Content-Security-Policy (scripts and styles from our own static files only, no inline
  code) and the other headers below, and is never cached.
- When the session store (Redis) cannot be reached, the dashboard answers 503 pages: sessions
  and sign-in locks have no per-process fallback (see ADR 0008).
- Failed sign-ins are counted per email and per client address with the API's rate limiter;
  past the limit, sign-ins for that email or from that address are refused (even with the
  right password) for a fixed lock-out, however close to the window's end the limit was hit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import PermissionDeniedException
from litestar.middleware import DefineMiddleware
from litestar.middleware._utils import should_bypass_middleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.middleware.session.base import SessionMiddleware
from litestar.middleware.session.server_side import (
    ServerSideSessionBackend,
    ServerSideSessionConfig,
)
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from litestar.types import Empty, Message, Receive, Scope, ScopeSession, Send
from litestar.utils.scope.state import ScopeState
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from adapters.rate_limiter import RateLimiter
from api.page_headers import PAGE_HEADERS

PREFIX = "/dashboard"
SESSION_STORE = "dashboard-sessions"
LOCK_STORE = "dashboard-sign-in-locks"
SESSION_COOKIE = "__Host-icodrip-session"
CSRF_COOKIE = "__Host-icodrip-csrf"
SESSION_MAX_AGE = 8 * 3600
#: How long one round trip to the session store may take before the page says it is down.
STORE_TIMEOUT_SECONDS = 1.0

#: Failed sign-ins allowed per window (one minute) before sign-ins are refused.
FAILED_SIGN_INS_PER_EMAIL = 5
FAILED_SIGN_INS_PER_ADDRESS = 20
#: How long sign-ins stay refused once a limit is passed.
SIGN_IN_LOCK_OUT_SECONDS = 5 * 60

#: A route's opt: its requests read the session without renewing or saving it, so they do not
#: count as activity for the idle timeout (`SESSION_MAX_AGE`, renewed on every other request):
#: a page's background polling must not keep an unattended session alive.
LEAVES_SESSION_IDLE = "leaves_session_idle"

#: Every dashboard response's: the pages' own, and never cached (a key shown once must not
#: come back from a cache).
SECURITY_HEADERS = {**PAGE_HEADERS, "cache-control": "no-store"}


def is_dashboard_path(path: str) -> bool:
    """Whether `path` is the dashboard's (its pages, its static files, its unknown paths)."""
    return path == PREFIX or path.startswith(f"{PREFIX}/")


async def stamp_security_headers(message: Message, scope: Scope) -> None:
    """Put the dashboard's security headers on every response under `/dashboard`."""
    # An app-level `before_send` hook, not the router's `response_headers`: Litestar leaves
    # those off exception responses, and unknown paths or methods never reach the router.
    if message["type"] != "http.response.start" or not is_dashboard_path(scope["path"]):
        return
    # Replaced, not added: a response must not carry two policies that disagree.
    headers = [
        (name, value)
        for name, value in message.get("headers", ())
        if name.decode("latin-1").lower() not in SECURITY_HEADERS
    ]
    headers.extend((name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items())
    message["headers"] = headers


def leaves_session_idle(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether this request's route reads the session without renewing it (its opt)."""
    handler = connection.scope.get("route_handler")
    return handler is not None and bool(handler.opt.get(LEAVES_SESSION_IDLE))


class DashboardSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side sessions, except that an anonymous visit stores nothing, and a
    route marked `LEAVES_SESSION_IDLE` neither renews the session nor saves it (ending it, as
    a disabled user's request does, still ends it)."""

    async def load_from_connection(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> dict[str, Any]:
        if not leaves_session_idle(connection):
            return await super().load_from_connection(connection)
        session_id = connection.cookies.get(self.config.key)
        if not session_id:
            return {}
        store = self.config.get_store_from_app(connection.scope["app"])
        data = await store.get(session_id)  # without `renew_for`: its expiry stays as it was
        return {} if data is None else self.deserialize_data(data)

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: Any
    ) -> None:
        anonymous = isinstance(scope_session, dict) and not scope_session
        if anonymous and not connection.cookies.get(self.config.key):
            return  # no session to keep, none to end: no store write, no cookie
        if scope_session is not Empty and leaves_session_idle(connection):
            return  # read, not renewed: no store write, no cookie
        await super().store_in_message(scope_session, message, connection)


_UNSAVED = "icodrip.dashboard.session_unsaved"


class DashboardSessionMiddleware(SessionMiddleware[DashboardSessionBackend]):
    """Litestar's session middleware, except that a session the store failed to save (or
    delete) is an error page (the router's 503), never the response that assumed it saved.

    Litestar saves the session as the response starts, after the handler has run: a signed-in
    redirect whose session was not saved, or a signed-out page whose session was not deleted,
    must not reach the browser. So nothing of that response is sent, and the store's error is
    raised again once the handler is done, for the router's exception handlers to answer.
    """

    def create_send_wrapper(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> Callable[[Message], Awaitable[None]]:
        """Send the response only if its session was saved; otherwise note why not."""
        send = super().create_send_wrapper(connection)
        state = connection.scope["state"]

        async def send_if_saved(message: Message) -> None:
            if _UNSAVED in state:
                return
            try:
                await send(message)
            except RedisError as error:
                if message["type"] != "http.response.start":
                    raise
                state[_UNSAVED] = error

        return send_if_saved

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; raise the store's error if its response was held back."""
        scope.setdefault("state", {})
        await super().__call__(scope, receive, send)
        error = scope["state"].pop(_UNSAVED, None)
        if isinstance(error, RedisError):
            # Litestar's exception handling took the held-back response as started; it was not.
            ScopeState.from_scope(scope).response_started = False
            raise error


@dataclass
class DashboardSessionConfig(ServerSideSessionConfig):
    _backend_class = DashboardSessionBackend

    @property
    def middleware(self) -> DefineMiddleware:
        """The session middleware with this config (ours: see DashboardSessionMiddleware)."""
        return DefineMiddleware(DashboardSessionMiddleware, backend=self._backend_class(self))


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
    """CSRF tokens signed with a secret every API process derives alike."""
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


_NONCE_HEX = 64  # 32 random bytes
_MAC_HEX = 64  # HMAC-SHA256


class SessionBoundCSRFMiddleware(CSRFMiddleware):
    """Litestar's double-submit CSRF check, with each token bound to one session.

    A token is a random nonce and an HMAC, under the CSRF secret, of the nonce and the session
    id its page was rendered for (empty before sign-in). A state-changing request passes when
    the token it sends equals the CSRF cookie AND was issued to the session cookie it comes
    with: a token (and cookie) taken from one session is refused with another. A page read
    with a token bound to some other session gets a new token and cookie: so signing in or out
    (a new session id) always issues a new token.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Issue a token on safe requests; check it on the others."""
        if scope["type"] != ScopeType.HTTP or should_bypass_middleware(
            scope=scope,
            scopes=self.scopes,
            exclude_opt_key=self.config.exclude_from_csrf_key,
            exclude_path_pattern=self.exclude,
        ):
            await self.app(scope, receive, send)
            return
        request: Any = scope["litestar_app"].request_class(scope=scope, receive=receive)
        session_id = request.cookies.get(SESSION_COOKIE) or ""
        if session_id == "null":  # how Litestar's session middleware clears its cookie
            session_id = ""
        cookie = request.cookies.get(self.config.cookie_name)
        state = ScopeState.from_scope(scope)
        if request.method in self.config.safe_methods:
            if cookie is not None and self._issued_to(cookie, session_id):
                state.csrf_token = cookie
                await self.app(scope, receive, send)
                return
            token = state.csrf_token = self._issue(session_id)
            await self.app(scope, receive, self.create_send_wrapper(send, token, None))
            return
        sent = request.headers.get(self.config.header_name)
        content_type, _ = request.content_type
        if not sent and content_type in {
            RequestEncodingType.URL_ENCODED,
            RequestEncodingType.MULTI_PART,
        }:
            sent = (await request.form()).get("_csrf_token")
        if (
            isinstance(sent, str)
            and cookie is not None
            and hmac.compare_digest(sent.encode(), cookie.encode())
            and self._issued_to(sent, session_id)
        ):
            state.csrf_token = sent
            await self.app(scope, receive, send)
            return
        raise PermissionDeniedException("CSRF token verification failed")

    def _mac(self, nonce: str, session_id: str) -> str:
        message = f"{nonce}:{session_id}".encode()
        return hmac.new(self.config.secret.encode(), message, hashlib.sha256).hexdigest()

    def _issue(self, session_id: str) -> str:
        nonce = secrets.token_hex(_NONCE_HEX // 2)
        return nonce + self._mac(nonce, session_id)

    def _issued_to(self, token: str, session_id: str) -> bool:
        if len(token) != _NONCE_HEX + _MAC_HEX or not token.isascii():
            return False
        nonce, mac = token[:_NONCE_HEX], token[_NONCE_HEX:]
        return hmac.compare_digest(mac.encode(), self._mac(nonce, session_id).encode())


def stores_for(redis_url: str | None) -> dict[str, Store]:
    """Sessions and sign-in locks: in Redis when configured, else in this process."""
    if redis_url:
        # Short timeouts and no retries: a page waits a second at most for a store that is
        # down, then says so (503), rather than hanging or retrying with back-off.
        client = Redis.from_url(
            redis_url,
            socket_connect_timeout=STORE_TIMEOUT_SECONDS,
            socket_timeout=STORE_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        root = RedisStore(client, namespace="icodrip-dashboard", handle_client_shutdown=True)
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
