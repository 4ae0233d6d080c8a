"""Rate limits through the client against a real server: the headers, a 429, its retry.

Keys of agency organizations with tiny custom limits (a few requests per minute), so a 429
takes a handful of requests; a 429 `too_many_failed_attempts` takes 31 unknown keys from this
address (only requests with bad keys are refused then). Windows are the Unix minute: a test
that counts its hits starts at least `MARGIN` seconds before a window ends, so all of them
land in one window.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest

from domain.actors import OPERATOR
from domain.organization import Organization
from e2e.harness import not_at_a_minute_boundary
from icodrip_client import AuthenticationError, Icodrip, RateLimitError
from icodrip_client._retry import RetryPolicy
from real_server import RealServer, Stage

LIMIT = 3
MARGIN = 5.0
FAILED_ATTEMPTS_ALLOWED = 30  # per address and minute


@dataclass(frozen=True)
class Limited:
    org: Organization
    key: str


@dataclass(frozen=True)
class World:
    server: RealServer
    stage: Stage
    roomy: str
    limited: Limited
    lifted: Limited


@pytest.fixture(scope="module")
def world(stage: Stage) -> World:
    roomy = stage.key(stage.org())
    limited, lifted = stage.org(rate_limit=LIMIT), stage.org(rate_limit=LIMIT)
    limited_key, lifted_key = stage.key(limited), stage.key(lifted)
    return World(
        server=stage.start(),  # after the keys: the server loads them as it starts
        stage=stage,
        roomy=roomy,
        limited=Limited(limited, limited_key),
        lifted=Limited(lifted, lifted_key),
    )


def exhaust(client: Icodrip) -> RateLimitError:
    """Use up the client's key's window: the 429 that ends it (the client's retries off)."""
    not_at_a_minute_boundary(MARGIN)
    for _ in range(LIMIT + 1):
        try:
            client.api_keys.current()
        except RateLimitError as refused:
            return refused
    raise AssertionError(f"no 429 after {LIMIT + 1} requests")


def test_the_client_keeps_the_last_rate_limit_headers(world: World) -> None:
    not_at_a_minute_boundary(MARGIN)  # both requests in one window
    with world.server.client(world.roomy) as client:
        client.api_keys.current()
        first = client.rate_limit
        client.api_keys.current()
        second = client.rate_limit

    assert first is not None and second is not None
    assert (first.limit, first.policy) == (100, "per-key")
    assert second.remaining is not None and first.remaining is not None
    assert second.remaining < first.remaining
    assert second.reset is not None and second.reset % 60 == 0 and second.reset > time.time()
    assert second.retry_after is None  # only a refusal says when to come back


def test_a_429_with_retries_off_raises_with_the_limits_headers(world: World) -> None:
    with world.server.client(world.limited.key, max_retries=0) as client:
        refused = exhaust(client)

    assert (refused.status, refused.code) == (429, "rate_limit_exceeded")
    assert (refused.limit, refused.remaining) == (LIMIT, 0)
    assert refused.reset is not None and refused.reset % 60 == 0
    assert refused.retry_after is not None
    assert 1 <= refused.retry_after <= 60
    assert refused.reset - 61 <= time.time() <= refused.reset


def test_a_429_leaves_its_headers_on_the_client(world: World) -> None:
    with world.server.client(world.limited.key, max_retries=0) as client:
        refused = exhaust(client)
        seen = client.rate_limit

    assert seen is not None
    assert (seen.limit, seen.remaining, seen.reset) == (LIMIT, 0, refused.reset)
    assert seen.retry_after is not None and seen.retry_after >= 1


def test_the_wait_before_retrying_a_429_is_its_retry_after(world: World) -> None:
    with world.server.client(world.limited.key, max_retries=0) as client:
        refused = exhaust(client)
    policy = RetryPolicy(max_retries=2, max_retry_delay=60.0)

    waits = policy.after_refusal(refused, retries_done=0, safe=True, now=time.time())

    assert waits == refused.retry_after


def test_a_429_is_retried_after_retry_after_and_then_answered(world: World) -> None:
    """With retries on, the client waits and asks again until the server admits the request.

    A window lasts up to 60 s, so the test keeps the wait short: `max_retry_delay` caps each
    wait at a second, and the operator lifts the organization's limit when the first 429 is
    seen (the server picks that up within a second), which is what lets a retry through
    within the same window.
    """
    stage, lifted = world.stage, world.lifted
    with world.server.client(lifted.key, max_retries=0) as plain:
        exhaust(plain)

    answers: list[tuple[float, int]] = []

    def on_response(response: httpx.Response) -> None:
        if response.status_code == 429 and not answers:
            stage.registry.set_rate_limit(lifted.org.id, 1000, OPERATOR)
        answers.append((time.monotonic(), response.status_code))

    with (
        httpx.Client(verify=world.server.tls, event_hooks={"response": [on_response]}) as http,
        Icodrip(
            api_key=lifted.key,
            base_url=world.server.base_url,
            http_client=http,
            max_retries=5,
            max_retry_delay=1.0,
        ) as client,
    ):
        me = client.api_keys.current()

    statuses = [status for _, status in answers]
    assert me.organization == f"org_{lifted.org.id.hex}"
    assert statuses[0] == 429 and statuses[-1] == 200
    assert set(statuses[:-1]) == {429}
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(answers)]
    assert all(gap >= 1.0 for gap in gaps)  # Retry-After (at least 1 s), capped at 1 s


def test_a_429_past_the_retries_is_raised(world: World) -> None:
    with world.server.client(world.limited.key, max_retries=0) as plain:
        exhaust(plain)
    attempts: list[httpx.Request] = []
    name = f"capped {uuid.uuid4().hex[:6]}"

    with (
        httpx.Client(verify=world.server.tls, event_hooks={"request": [attempts.append]}) as http,
        Icodrip(
            api_key=world.limited.key,
            base_url=world.server.base_url,
            http_client=http,
            max_retries=2,
            max_retry_delay=0.05,
        ) as client,
        pytest.raises(RateLimitError) as caught,
    ):
        client.api_keys.create(name=name)

    assert len(attempts) == 3  # the first try and two retries
    assert caught.value.code == "rate_limit_exceeded"


def test_a_429_is_retried_for_a_delete_as_the_server_did_not_act(world: World) -> None:
    with world.server.client(world.limited.key, max_retries=0) as plain:
        exhaust(plain)
    attempts: list[httpx.Request] = []

    with (
        httpx.Client(verify=world.server.tls, event_hooks={"request": [attempts.append]}) as http,
        Icodrip(
            api_key=world.limited.key,
            base_url=world.server.base_url,
            http_client=http,
            max_retries=2,
            max_retry_delay=0.05,
        ) as client,
        pytest.raises(RateLimitError),
    ):
        client.webhooks.delete("we_" + "0" * 32)

    assert [request.method for request in attempts] == ["DELETE"] * 3


def test_too_many_failed_attempts_is_raised_at_once(world: World) -> None:
    """Each retry with a bad key would be one more failed attempt from this address."""
    unknown = "ak_live_" + uuid.uuid4().hex
    not_at_a_minute_boundary(MARGIN)
    with world.server.client(unknown, max_retries=0) as plain:
        for _ in range(FAILED_ATTEMPTS_ALLOWED):
            with pytest.raises(AuthenticationError):
                plain.api_keys.current()
    attempts: list[httpx.Request] = []

    with (
        httpx.Client(verify=world.server.tls, event_hooks={"request": [attempts.append]}) as http,
        Icodrip(
            api_key=unknown,
            base_url=world.server.base_url,
            http_client=http,
            max_retries=2,
            max_retry_delay=0.05,
        ) as client,
        pytest.raises(RateLimitError) as caught,
    ):
        client.api_keys.current()

    assert caught.value.code == "too_many_failed_attempts"
    assert len(attempts) == 1
