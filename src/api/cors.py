"""CORS for public keys: only `/v1/events` may be called from a browser (docs/adr/0009).

A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) carries no key, so
it cannot be checked against one key's origins. It is answered for `POST /v1/events` when the
origin is allowed by SOME active public key (an index over the in-memory key mirror, no I/O);
the real request then carries its key, and authentication refuses an origin that key does
not list (403 `origin_not_allowed`). Only a response to an allowed origin gets
`Access-Control-Allow-Origin`, so a page on another origin can neither send nor read.

A preflight for any other route is refused (403 `secret_key_in_browser`): only secret keys
work there, and they must never be used from a browser.
"""

from __future__ import annotations

from typing import Any

from api.context import SCOPE_KEY
from api.errors import send_error
from api.key_mirror import KeyMirror

EVENTS_PATHS = frozenset({"/v1/events", "/v1/events/"})
ALLOWED_METHODS = "POST, OPTIONS"
ALLOWED_HEADERS = "authorization, content-type, idempotency-key"
EXPOSED_HEADERS = (
    "x-request-id, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, retry-after, "
    "idempotent-replayed, date"
)
MAX_AGE_SECONDS = "600"


class PublicOrigins:
    """Every origin some active public key allows, recomputed when the mirror changes."""

    def __init__(self, mirror: KeyMirror) -> None:
        self.mirror = mirror
        self._version: tuple[int, int, int] | None = None
        self._origins: frozenset[str] = frozenset()

    def __contains__(self, origin: object) -> bool:
        lookup = self.mirror.lookup
        version = (id(lookup), lookup.position, len(lookup))
        if version != self._version:
            self._origins = lookup.public_origins()
            self._version = version
        return origin in self._origins


class CorsMiddleware:
    """Answers preflights and adds CORS headers to `/v1/events` responses for allowed origins."""

    def __init__(self, app: Any, *, mirror: KeyMirror) -> None:
        self.app = app
        self.origins = PublicOrigins(mirror)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_origin = headers.get(b"origin")
        if raw_origin is None:
            await self.app(scope, receive, send)
            return
        origin = raw_origin.decode("latin-1").strip().lower()
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await self._preflight(scope, headers, origin, send)
            return
        if scope["path"] not in EVENTS_PATHS:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Any) -> None:
            if message["type"] == "http.response.start":
                context = scope.get(SCOPE_KEY)
                principal = None if context is None else context.principal
                extra = [(b"vary", b"Origin")]
                if principal is not None and origin in principal.allowed_origins:
                    extra += [
                        (b"access-control-allow-origin", origin.encode()),
                        (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
                    ]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, scope: Any, headers: dict[bytes, bytes], origin: str, send: Any
    ) -> None:
        method = headers[b"access-control-request-method"].decode("latin-1").strip().upper()
        if scope["path"] not in EVENTS_PATHS:
            await self._refuse(
                scope,
                send,
                "secret_key_in_browser",
                "only POST /v1/events may be called from a browser, with a public key (pk_…); "
                "secret keys must stay on servers",
            )
            return
        if method != "POST" or origin not in self.origins:
            await self._refuse(
                scope, send, "origin_not_allowed", "no public key allows this origin and method"
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    (b"access-control-allow-origin", origin.encode()),
                    (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
                    (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
                    (b"access-control-max-age", MAX_AGE_SECONDS.encode()),
                    (
                        b"vary",
                        b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
                    ),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(self, scope: Any, send: Any, code: str, message: str) -> None:
        context = scope.get(SCOPE_KEY)
        request_id = None if context is None else context.request_id
        await send_error(send, 403, code, message, request_id, [(b"vary", b"Origin")])
