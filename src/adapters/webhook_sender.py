"""Sends one webhook attempt over HTTP, and only ever to addresses webhooks may reach.

Checking a URL's host name is not enough to stop SSRF: a public name can resolve to
127.0.0.1, or resolve to a public address when checked and to an internal one a moment later
(DNS rebinding). So `GuardedBackend` sits under httpx's connection pool: it resolves the host
itself, refuses the connection if any address is not allowed, and connects to the address it
checked. TLS still verifies the certificate against the URL's host name, which httpcore passes
to `start_tls` whatever address the socket is connected to. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

import httpcore
import httpx

from domain.webhook_retries import ATTEMPT_TIMEOUT
from domain.webhook_urls import WebhookUrlNotAllowed, address_allowed, check_url

#: Resolves a host name and port to IP addresses, as text.
Resolve = Callable[[str, int], Awaitable[list[str]]]

#: Bytes of a response body read at most; the rest is never downloaded.
MAX_BODY_READ = 4096
#: Characters of the response body kept for people to read.
EXCERPT_LENGTH = 256
_MAX_ERROR_LENGTH = 200


class AddressNotAllowed(httpcore.ConnectError):
    """A webhook host resolved to an address webhooks may not reach."""

    def __init__(self, host: str, address: str) -> None:
        named = "" if host == address else f" ({host})"
        super().__init__(f"address not allowed: {address}{named}")
        self.host = host
        self.address = address


class HostDoesNotResolve(httpcore.ConnectError):
    """A webhook host has no address."""

    def __init__(self, host: str) -> None:
        super().__init__(f"host {host} does not resolve")
        self.host = host


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, each once."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def allowed_addresses(
    host: str, port: int, *, allow_private: bool, resolve: Resolve
) -> list[str]:
    """The addresses of `host`, or AddressNotAllowed if any one of them is not allowed."""
    if _is_ip_literal(host):
        addresses = [host]
    else:
        try:
            addresses = await resolve(host, port)
        except (OSError, UnicodeError, ValueError) as exc:
            raise HostDoesNotResolve(host) from exc
    if not addresses:
        raise HostDoesNotResolve(host)
    # One bad address refuses them all: which address is tried first is not ours to choose.
    for address in addresses:
        if not address_allowed(address, allow_private=allow_private):
            raise AddressNotAllowed(host, address)
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that connects only to allowed addresses, the very ones it checked."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolve: Resolve | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._resolve = resolve or resolve_host
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A connection to the first reachable allowed address of `host`."""
        addresses = await allowed_addresses(
            host, port, allow_private=self._allow_private, resolve=self._resolve
        )
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None  # addresses is never empty
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Refused: webhooks go over TCP only."""
        raise httpcore.ConnectError("webhooks are not sent over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        """Sleep as the inner backend does (used between connection retries)."""
        await self._inner.sleep(seconds)


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one delivery attempt came to: a status, or an error saying why there is none."""

    status_code: int | None
    duration_ms: float
    error: str | None
    excerpt: str = ""

    @property
    def ok(self) -> bool:
        """Whether the receiver accepted the message (any 2xx)."""
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    """Sends webhook requests: one attempt each, never following redirects, never raising.

    `resolve` and `ssl_context` replace the system's resolver and trust store (for tests).
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        timeout: float = ATTEMPT_TIMEOUT,
        resolve: Resolve | None = None,
        max_connections: int = 100,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._timeout = timeout
        transport = httpx.AsyncHTTPTransport(trust_env=False)
        # httpx has no parameter for the network backend, so its pool is replaced by the same
        # pool over the guarded backend (httpx 0.28 keeps it in `_pool`).
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(allow_private=allow_private, resolve=resolve),
        )
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            timeout=timeout,
        )

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> AttemptOutcome:
        """POST `body` to `url` once; network failures become the outcome's error."""
        started = time.perf_counter()

        def outcome(status: int | None, error: str | None, excerpt: str = "") -> AttemptOutcome:
            elapsed_ms = (time.perf_counter() - started) * 1000
            return AttemptOutcome(status, elapsed_ms, error, excerpt)

        try:
            # Checked again at every attempt: the rules may have changed since it was stored.
            checked = check_url(url, allow_private=self._allow_private)
        except WebhookUrlNotAllowed as exc:
            return outcome(None, exc.message)
        try:
            async with asyncio.timeout(self._timeout):
                status, excerpt = await self._post(checked, headers, body)
        except (TimeoutError, httpx.TimeoutException):
            return outcome(None, f"timed out after {self._timeout:g} s")
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            return outcome(None, describe_failure(exc))
        return outcome(status, _status_error(status), excerpt)

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        # No compression asked for, and raw bytes read: a small compressed body could decode
        # to gigabytes, and only the first 4 KiB are ever wanted.
        request_headers = {**headers, "accept-encoding": "identity"}
        async with self._client.stream(
            "POST", url, headers=request_headers, content=body
        ) as response:
            read = bytearray()
            async for chunk in response.aiter_raw():
                read += chunk
                if len(read) >= MAX_BODY_READ:
                    break  # leaving the block closes the connection with the rest unread
            text = bytes(read[:MAX_BODY_READ]).decode("utf-8", errors="replace")
            return response.status_code, text[:EXCERPT_LENGTH]

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._client.aclose()


def describe_failure(exc: BaseException) -> str:
    """A short, human description of why an attempt got no response."""
    for cause in _causes(exc):
        if isinstance(cause, AddressNotAllowed | HostDoesNotResolve):
            return str(cause)
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not valid: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed: {cause.reason or cause}"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
    if isinstance(exc, httpx.RemoteProtocolError):
        text = f"invalid HTTP response: {exc}"
    elif isinstance(exc, httpx.ConnectError):
        text = f"connection failed: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:_MAX_ERROR_LENGTH]


def _status_error(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"redirect not followed ({status})"
    return f"HTTP {status}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what caused it and the members of exception groups, each once."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
