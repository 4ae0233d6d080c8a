"""The webhook sender: one attempt, its outcome, and never a request to where it must not go.

Real sockets on 127.0.0.1: a tiny asyncio HTTP/1.1 server answers as each test needs, and
counts connections, so "never contacted" is checked, not assumed. 127.0.0.1 stands for an
internal address: with `allow_private=False` it must be unreachable, whatever the URL or DNS
says; with `allow_private=True` it stands for a receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.webhook_sender import (
    AddressNotAllowed,
    GuardedBackend,
    WebhookSender,
)
from e2e.harness import make_test_pki

BODY = b'{"type":"api_key.created"}'
HEADERS = {"webhook-id": "msg_1", "content-type": "application/json"}


@dataclass
class Request:
    target: str
    headers: dict[str, str]
    body: bytes


Respond = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    port: int = 0
    connections: int = 0
    requests: list[Request] = field(default_factory=list)


def reply(status: int, body: bytes = b"", *extra: str) -> Respond:
    """A responder that answers every request with this status, body and headers."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        head = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}", *extra]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return respond


@contextlib.asynccontextmanager
async def serve(respond: Respond, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    """An HTTP/1.1 server on 127.0.0.1 answering with `respond`, one request per connection."""
    server = Server()
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        server.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(head[0].split(" ")[1], headers, body)
            server.requests.append(request)
            await respond(request, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


def resolving(names: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    """A resolver that knows only `names` (any other name does not resolve)."""

    async def resolve(host: str, port: int) -> list[str]:
        if host not in names:
            raise OSError(f"unknown host {host}")
        return names[host]

    return resolve


@contextlib.asynccontextmanager
async def sender(allow_private: bool = True, **options: Any) -> AsyncIterator[WebhookSender]:
    """A sender (allowing 127.0.0.1 unless told otherwise), closed afterwards."""
    webhooks = WebhookSender(allow_private=allow_private, **options)
    try:
        yield webhooks
    finally:
        await webhooks.aclose()


async def test_a_2xx_answer_is_an_ok_outcome_and_the_request_carries_body_and_headers() -> None:
    async with serve(reply(204)) as server, sender() as webhooks:
        outcome = await webhooks.send(f"http://127.0.0.1:{server.port}/hook?x=1", HEADERS, BODY)

    assert outcome.ok and outcome.status_code == 204
    assert outcome.error is None and outcome.excerpt == ""
    assert outcome.duration_ms > 0
    [request] = server.requests
    assert (request.target, request.body) == ("/hook?x=1", BODY)
    assert request.headers["webhook-id"] == "msg_1"
    assert request.headers["content-type"] == "application/json"


async def test_an_error_answer_is_a_failed_outcome_with_an_excerpt_of_its_body() -> None:
    body = ("boom " * 100).encode()
    async with serve(reply(500, body)) as server, sender() as webhooks:
        outcome = await webhooks.send(f"http://127.0.0.1:{server.port}/", HEADERS, BODY)

    assert not outcome.ok
    assert (outcome.status_code, outcome.error) == (500, "HTTP 500")
    assert outcome.excerpt == body.decode()[:256]


async def test_a_body_that_is_not_utf8_still_gives_a_readable_excerpt() -> None:
    async with serve(reply(400, b"bad \xff\xfe request")) as server, sender() as webhooks:
        outcome = await webhooks.send(f"http://127.0.0.1:{server.port}/", HEADERS, BODY)

    assert outcome.excerpt == "bad \ufffd\ufffd request"


async def test_a_slow_receiver_times_out_after_the_attempt_timeout() -> None:
    async def slow(request: Request, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with serve(slow) as server, sender(timeout=0.5) as webhooks:
        started = time.monotonic()
        outcome = await webhooks.send(f"http://127.0.0.1:{server.port}/", HEADERS, BODY)

    assert time.monotonic() - started < 2
    assert (outcome.status_code, outcome.error) == (None, "timed out after 0.5 s")


async def test_a_receiver_trickling_its_body_is_cut_off_at_the_attempt_timeout() -> None:
    # Each byte arrives before the read timeout: only a limit on the whole attempt stops it.
    async def trickle(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\n")
        for _ in range(30):
            writer.write(b".")
            await writer.drain()
            await asyncio.sleep(0.1)

    async with serve(trickle) as server, sender(timeout=0.5) as webhooks:
        started = time.monotonic()
        outcome = await webhooks.send(f"http://127.0.0.1:{server.port}/", HEADERS, BODY)

    assert time.monotonic() - started < 2
    assert outcome.error == "timed out after 0.5 s"


async def test_a_redirect_is_not_followed_and_its_target_never_contacted() -> None:
    async with serve(reply(204)) as target:
        location = f"location: http://127.0.0.1:{target.port}/internal"
        async with serve(reply(302, b"", location)) as server, sender() as webhooks:
            outcome = await webhooks.send(f"http://127.0.0.1:{server.port}/", HEADERS, BODY)

    assert not outcome.ok
    assert (outcome.status_code, outcome.error) == (302, "redirect not followed (302)")
    assert target.connections == 0


async def test_a_huge_body_is_only_partly_read() -> None:
    # An endless chunked body: reading it all would never end (and time out).
    stopped_reading = asyncio.Event()

    async def endless(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        try:
            while True:
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            stopped_reading.set()

    async with serve(endless) as server, sender(timeout=3.0) as webhooks:
        outcome = await webhooks.send(f"http://127.0.0.1:{server.port}/", HEADERS, BODY)
        await asyncio.wait_for(stopped_reading.wait(), 2)

    assert outcome.ok and outcome.error is None
    assert outcome.excerpt == "x" * 256


async def test_a_refused_connection_is_an_outcome_not_an_exception() -> None:
    async with serve(reply(204)) as server:
        port = server.port  # closed once the block ends
    async with sender() as webhooks:
        outcome = await webhooks.send(f"http://127.0.0.1:{port}/", HEADERS, BODY)

    assert (outcome.status_code, outcome.error) == (None, "connection refused")


async def test_garbage_instead_of_http_is_an_outcome_not_an_exception() -> None:
    async def garbage(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()

    async with serve(garbage) as server, sender() as webhooks:
        outcome = await webhooks.send(f"http://127.0.0.1:{server.port}/", HEADERS, BODY)

    assert outcome.status_code is None
    assert outcome.error is not None and outcome.error.startswith("invalid HTTP response")


async def test_without_allow_private_an_internal_address_is_refused_without_connecting() -> None:
    async with serve(reply(204)) as server, sender(allow_private=False) as webhooks:
        outcome = await webhooks.send(f"https://127.0.0.1:{server.port}/", HEADERS, BODY)
        with pytest.raises(AddressNotAllowed, match=r"address not allowed: 127\.0\.0\.1"):
            await GuardedBackend(allow_private=False).connect_tcp("127.0.0.1", server.port)

    assert outcome.status_code is None
    assert outcome.error is not None and "address not allowed: 127.0.0.1" in outcome.error
    assert server.connections == 0


async def test_a_stored_url_no_longer_allowed_is_refused_at_send_time() -> None:
    async with serve(reply(204)) as server, sender(allow_private=False) as webhooks:
        outcome = await webhooks.send(f"https://localhost:{server.port}/", HEADERS, BODY)

    assert outcome.error is not None and "not a public host name" in outcome.error
    assert server.connections == 0


async def test_a_public_name_resolving_to_an_internal_address_is_refused() -> None:
    resolve = resolving({"hooks.example.com": ["127.0.0.1"]})
    async with serve(reply(204)) as server, sender(allow_private=False, resolve=resolve) as hooks:
        outcome = await hooks.send(f"https://hooks.example.com:{server.port}/", HEADERS, BODY)

    assert outcome.status_code is None
    assert outcome.error == "address not allowed: 127.0.0.1 (hooks.example.com)"
    assert server.connections == 0


async def test_one_internal_address_among_public_ones_refuses_the_name() -> None:
    resolve = resolving({"hooks.example.com": ["93.184.215.14", "169.254.169.254"]})
    backend = GuardedBackend(allow_private=False, resolve=resolve)

    with pytest.raises(AddressNotAllowed, match=r"169\.254\.169\.254"):
        await backend.connect_tcp("hooks.example.com", 443)


async def test_with_allow_private_the_resolved_address_is_connected_with_the_hosts_name() -> None:
    resolve = resolving({"hooks.example.com": ["127.0.0.1"]})
    async with serve(reply(200, b"ok")) as server, sender(resolve=resolve) as webhooks:
        outcome = await webhooks.send(f"http://hooks.example.com:{server.port}/", HEADERS, BODY)

    assert outcome.ok and outcome.excerpt == "ok"
    assert server.requests[0].headers["host"] == f"hooks.example.com:{server.port}"


async def test_the_connection_goes_to_the_checked_address_without_a_second_lookup() -> None:
    # `.invalid` never resolves (RFC 6761): connecting by name instead of by the checked
    # address would fail, and a second lookup could be answered differently (DNS rebinding).
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    async with serve(reply(204)) as server, sender(resolve=resolve) as webhooks:
        outcome = await webhooks.send(f"http://rebind.invalid:{server.port}/", HEADERS, BODY)

    assert outcome.ok
    assert lookups == ["rebind.invalid"]


async def test_an_ip_address_in_the_url_is_connected_as_it_is_never_looked_up() -> None:
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return []

    async with serve(reply(204)) as server, sender(resolve=resolve) as webhooks:
        outcome = await webhooks.send(f"http://127.0.0.1:{server.port}/", HEADERS, BODY)

    assert outcome.ok
    assert lookups == []


async def test_a_host_that_does_not_resolve_is_a_failed_outcome() -> None:
    async with sender(resolve=resolving({})) as webhooks:
        outcome = await webhooks.send("https://gone.example.com/", HEADERS, BODY)

    assert outcome.error == "host gone.example.com does not resolve"


async def test_tls_verifies_the_certificate_against_the_host_name_not_the_address(
    tmp_path: Path,
) -> None:
    # The certificate is for localhost and 127.0.0.1: were it checked against the connected
    # address, hooks.example.com would pass too.
    pki = make_test_pki(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki.server_cert, pki.server_key)
    client_tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    resolve = resolving({"localhost": ["127.0.0.1"], "hooks.example.com": ["127.0.0.1"]})

    async with (
        serve(reply(204), tls=server_tls) as server,
        sender(resolve=resolve, ssl_context=client_tls) as webhooks,
    ):
        good = await webhooks.send(f"https://localhost:{server.port}/", HEADERS, BODY)
        bad = await webhooks.send(f"https://hooks.example.com:{server.port}/", HEADERS, BODY)

    assert good.ok
    assert bad.status_code is None
    assert bad.error is not None and bad.error.startswith("TLS certificate not valid")
    assert "hooks.example.com" in bad.error
    assert len(server.requests) == 1
