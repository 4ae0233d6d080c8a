"""The outermost layer: HTTPS only, request ids, security and rate-limit headers, request events.

Pure ASGI (as is the key gate inside it, `api.auth.KeyGate`), so that the per-request path
costs a few microseconds of Python, and so that it sees every response — including the 401s
and 429s of authentication — and records one request event for each request that presented
a key, durable before the response starts, without awaiting NATS
(`RequestEventPublisher.publish`).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Sequence
from typing import Any

import structlog

from adapters.request_events import RequestEvent, new_event_id
from api.context import SCOPE_KEY, RequestContext
from api.errors import send_error
from api.rate_limit_headers import rate_limit_header_pairs
from api.services import Services
from domain.key_format import redact_keys
from domain.key_states import ExposureSource

HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
#: Paths a load balancer probes over plain HTTP.
PLAIN_HTTP_ALLOWED = ("/healthz", "/readyz")

log = structlog.get_logger()


class EdgeMiddleware:
    """See the module docstring; `trusted_proxies` may set the scheme and client address."""

    def __init__(
        self,
        app: Any,
        *,
        services: Services,
        trusted_proxies: Sequence[str] = (),
        require_https: bool = True,
    ) -> None:
        self.app = app
        self.services = services
        self.trusted = [ipaddress.ip_network(cidr, strict=False) for cidr in trusted_proxies]
        self.require_https = require_https
        self._trusted_addresses: dict[str, bool] = {}  # parsing an address costs ~20 µs

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scheme, client_addr = self._origin(scope)
        context = RequestContext(
            request_id=new_event_id(), started=started, client_addr=client_addr
        )
        scope[SCOPE_KEY] = context
        request_id_header = (b"x-request-id", context.request_id.encode())
        status = 0

        async def send_with_headers(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), HSTS, request_id_header]
                if context.rate_limit is not None:
                    headers += rate_limit_header_pairs(context.rate_limit, time.time())
                message = {**message, "headers": headers}
                # Durable before the client hears of it: an answered request is audited.
                self._record(scope, context, status)
            await send(message)

        if self.require_https and scheme != "https" and scope["path"] not in PLAIN_HTTP_ALLOWED:
            self._flag_plain_http(scope, context)
            await self._refuse_plain_http(context, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)
        # 2xx lines are at debug: not even built unless that level is on.
        if status >= 400 or log.is_enabled_for(logging.DEBUG):
            principal = context.principal
            (log.debug if status < 400 else log.info)(
                "request",
                request_id=context.request_id,
                method=_redacted(scope["method"]),
                route=_route(scope),
                status=status,
                key_id=None if principal is None else principal.key_id_text,
                key_hint=context.key_hint,
                client_addr=context.client_addr,
            )

    def _record(self, scope: Any, context: RequestContext, status: int) -> None:
        publisher = self.services.publisher
        if context.presented_key and publisher is not None:
            publisher.publish(self._event(scope, context, status))

    def _origin(self, scope: Any) -> tuple[str, str | None]:
        """The scheme and client address, honouring `X-Forwarded-*` from trusted proxies only."""
        client = scope.get("client")
        addr = client[0] if client else None
        scheme = scope.get("scheme", "http")
        if addr and self.trusted and self._is_trusted(addr):
            # A proxy appends its own entry to whatever the client sent: only the rightmost
            # entry (of the last header, when repeated) is the proxy's word.
            proto = _rightmost(scope["headers"], b"x-forwarded-proto")
            if proto is not None:
                scheme = proto.lower()
            forwarded_for = _rightmost(scope["headers"], b"x-forwarded-for")
            if forwarded_for is not None:
                addr = redact_keys(forwarded_for)
        return scheme, addr

    def _is_trusted(self, addr: str) -> bool:
        known = self._trusted_addresses.get(addr)
        if known is None:
            try:
                ip = ipaddress.ip_address(addr)
                known = any(ip in network for network in self.trusted)
            except ValueError:
                known = False
            if len(self._trusted_addresses) >= 10_000:  # proxies are few; clients may be many
                self._trusted_addresses.clear()
            self._trusted_addresses[addr] = known
        return known

    def _flag_plain_http(self, scope: Any, context: RequestContext) -> None:
        """A secret key sent in clear text is possibly exposed: flag it (in the background)."""
        exposure = self.services.exposure
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if exposure is None or authorization is None:
            return
        scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer" and token:
            exposure.flag_token(
                token, ExposureSource.PLAIN_HTTP, f"plain HTTP from {context.client_addr}"
            )

    async def _refuse_plain_http(self, context: RequestContext, send: Any) -> None:
        await send_error(
            send,
            400,
            "https_required",
            "this API is served over HTTPS only; retry with https://",
            context.request_id,
        )

    def _event(self, scope: Any, context: RequestContext, status: int) -> RequestEvent:
        principal = context.principal
        user_agent = next((v for k, v in scope["headers"] if k == b"user-agent"), b"")
        return RequestEvent(
            # A request has one event at most: its id, unique and time-ordered, serves for both.
            id=context.request_id,
            request_id=context.request_id,
            key_id=None if principal is None else principal.key_id_text,
            key_hint=context.key_hint,
            org_id=None if principal is None else principal.org_id_text,
            env=None if principal is None else principal.env.value,
            # Client-supplied text, logged and published: a key typed into it must not be.
            method=_redacted(scope["method"]),
            route=_route(scope),
            path=_redacted(scope["path"]),
            status=status,
            client_addr=context.client_addr,
            # Redacted before it is cut: a key cut short would no longer be recognized.
            user_agent=_redacted(user_agent.decode("latin-1"))[:300] or None,
            latency_ms=(time.perf_counter() - context.started) * 1000,
            occurred_at=time.time(),
        )


def _route(scope: Any) -> str:
    """The route's template (`/v1/api-keys/{key_id:str}`), or the redacted path without one."""
    return scope.get("path_template") or _redacted(scope["path"])


_REDACTED: dict[str, str] = {}


def _redacted(text: str) -> str:
    """`redact_keys(text)`, remembered for texts without a key (never keeping a secret):
    clients repeat the same methods, paths and agents."""
    found = _REDACTED.get(text)
    if found is None:
        found = redact_keys(text)
        if found == text:
            if len(_REDACTED) >= 10_000:
                _REDACTED.clear()
            _REDACTED[text] = found
    return found


def _rightmost(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The last comma-separated entry of the last `name` header; None when absent or empty."""
    value = None
    for header, header_value in headers:
        if header == name:
            value = header_value
    if value is None:
        return None
    entry = value.decode("latin-1").rpartition(",")[2].strip()
    return entry or None
