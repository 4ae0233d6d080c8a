"""Retries on failures a real server cannot be made to produce on demand.

A refused connection and a server that never answers are real sockets here. A 5xx, a 409
`idempotency_key_in_use` (two identical requests racing) and a proxy's HTML error page come
from an `httpx.MockTransport`: the real server answers 5xx only while its store or limiter is
down (or on a bug), and the race cannot be won on purpose. Everything the real server can
answer is tested against it in the other modules (429s in `test_rate_limits`, a lost answer in
`test_idempotency`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from icodrip_client import APIConnectionError, APITimeoutError, Icodrip, InternalServerError
from icodrip_client._retry import MAX_BACKOFF, RetryPolicy, is_safe_to_repeat
from support.servers import free_port

BASE_URL = "https://icodrip.test"
ERROR = {"error": {"code": "store_unavailable", "message": "down", "request_id": "1" * 32}}
BUG = {"error": {"code": "internal_error", "message": "oops", "request_id": "1" * 32}}
HOOK_ID = "we_" + "3" * 32
HOOK = {
    "id": HOOK_ID,
    "object": "webhook_endpoint",
    "organization": "org_" + "2" * 32,
    "env": "live",
    "url": "https://hooks.example.com/icodrip",
    "events": ["api_key.revoked"],
    "description": "",
    "status": "enabled",
    "created_at": "2026-12-01T00:00:00Z",
    "deleted": True,
}
KEY = {
    "id": "key_" + "1" * 32,
    "object": "api_key",
    "organization": "org_" + "2" * 32,
    "name": "n",
    "env": "live",
    "type": "secret",
    "hint": "h",
    "status": "active",
    "created_at": "2026-12-01T00:00:00Z",
}


def scripted(
    *answers: httpx.Response, max_retry_delay: float = 0.05
) -> tuple[Icodrip, list[httpx.Request]]:
    """A client whose transport answers `answers` in turn and records each request."""
    sent: list[httpx.Request] = []
    queue = list(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return queue.pop(0)

    http = httpx.Client(transport=httpx.MockTransport(answer))
    client = Icodrip(
        api_key="unused", base_url=BASE_URL, http_client=http, max_retry_delay=max_retry_delay
    )
    return client, sent


def counting(hook: list[httpx.Request]) -> dict[str, list[Callable[[httpx.Request], None]]]:
    return {"request": [hook.append]}


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A listener that accepts connections and never says a word (its accepted sockets)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1], accepted
    listener.close()
    for connection in accepted:
        connection.close()


def test_a_refused_connection_is_retried_then_raised() -> None:
    sent: list[httpx.Request] = []
    with (
        httpx.Client(event_hooks=counting(sent)) as http,
        Icodrip(
            api_key="unused",
            base_url=f"https://127.0.0.1:{free_port()}",  # nobody listens there
            http_client=http,
            max_retries=2,
            max_retry_delay=0.01,
        ) as client,
        pytest.raises(APIConnectionError, match="ConnectError"),
    ):
        client.api_keys.current()

    assert len(sent) == 3


def test_no_retries_when_max_retries_is_zero() -> None:
    sent: list[httpx.Request] = []
    with (
        httpx.Client(event_hooks=counting(sent)) as http,
        Icodrip(
            api_key="unused",
            base_url=f"https://127.0.0.1:{free_port()}",
            http_client=http,
            max_retries=0,
        ) as client,
        pytest.raises(APIConnectionError),
    ):
        client.api_keys.current()

    assert len(sent) == 1


def test_a_server_that_never_answers_times_out_after_retrying(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    port, accepted = silent_server
    with (
        Icodrip(
            api_key="unused",
            base_url=f"https://127.0.0.1:{port}",
            timeout=0.2,
            max_retries=1,
            max_retry_delay=0.01,
        ) as client,
        pytest.raises(APITimeoutError),
    ):
        client.api_keys.list()

    assert len(accepted) == 2


def test_a_503_is_retried_after_its_retry_after() -> None:
    client, sent = scripted(
        httpx.Response(503, json=ERROR, headers={"Retry-After": "1"}),
        httpx.Response(200, json=KEY),
        max_retry_delay=0.3,
    )
    started = time.monotonic()

    me = client.api_keys.current()

    assert me.id == KEY["id"] and len(sent) == 2
    assert time.monotonic() - started >= 0.3  # Retry-After, capped by max_retry_delay


def test_a_503_is_retried_whatever_the_method_as_the_server_did_not_act() -> None:
    client, sent = scripted(
        httpx.Response(503, json=ERROR, headers={"Retry-After": "1"}),
        httpx.Response(200, json=HOOK),
    )

    deleted = client.webhooks.delete(HOOK_ID)

    assert deleted.deleted
    assert [request.method for request in sent] == ["DELETE", "DELETE"]


def test_a_500_is_raised_at_once() -> None:
    client, sent = scripted(httpx.Response(500, json=BUG), httpx.Response(200, json=KEY))

    with pytest.raises(InternalServerError) as caught:
        client.api_keys.current()

    assert len(sent) == 1  # a bug: asking again does not fix it
    assert (caught.value.status, caught.value.code) == (500, "internal_error")
    assert caught.value.request_id == "1" * 32


def test_a_delete_is_not_retried_after_a_502() -> None:
    client, sent = scripted(httpx.Response(502, text="bad gateway"), httpx.Response(200, json=HOOK))

    with pytest.raises(InternalServerError) as caught:
        client.webhooks.delete(HOOK_ID)

    assert caught.value.status == 502 and len(sent) == 1


def test_a_delete_that_timed_out_is_not_retried(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    port, accepted = silent_server
    with (
        Icodrip(
            api_key="unused",
            base_url=f"https://127.0.0.1:{port}",
            timeout=0.2,
            max_retries=2,
            max_retry_delay=0.01,
        ) as client,
        pytest.raises(APITimeoutError),
    ):
        client.webhooks.delete(HOOK_ID)

    assert len(accepted) == 1


def test_an_idempotency_key_makes_only_a_post_safe_to_repeat() -> None:
    """The API keeps answers by `Idempotency-Key` for POSTs only; it ignores the header on a
    DELETE, so the header does not make a DELETE safe to repeat."""
    assert is_safe_to_repeat("POST", "k") and not is_safe_to_repeat("POST", None)
    assert not is_safe_to_repeat("DELETE", "k")


def test_a_post_is_retried_with_the_same_idempotency_key() -> None:
    in_use = {"error": {"code": "idempotency_key_in_use", "message": "wait", "request_id": "2"}}
    client, sent = scripted(httpx.Response(409, json=in_use), httpx.Response(201, json=KEY))

    created = client.api_keys.create(name="n")

    assert created.id == KEY["id"]
    keys = {request.headers["idempotency-key"] for request in sent}
    assert len(sent) == 2 and len(keys) == 1


def test_a_patch_is_retried_as_it_only_sets_values() -> None:
    client, sent = scripted(httpx.Response(502, text="bad gateway"), httpx.Response(200, json=KEY))

    client.api_keys.rename(KEY["id"], "n")

    assert [request.method for request in sent] == ["PATCH", "PATCH"]
    assert "idempotency-key" not in sent[0].headers


def test_a_proxys_error_page_is_an_error_without_a_code() -> None:
    client, _ = scripted(*(httpx.Response(502, text="<html>bad gateway</html>") for _ in range(3)))

    with pytest.raises(InternalServerError) as caught:
        client.api_keys.current()

    assert (caught.value.status, caught.value.code) == (502, None)
    assert "bad gateway" in caught.value.body


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    policy = RetryPolicy(max_retries=10, max_retry_delay=60.0)

    for retries_done, full in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (8, MAX_BACKOFF)]:
        wait = policy.backoff(retries_done)
        assert 0.75 * full <= wait <= full
