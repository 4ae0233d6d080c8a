"""Idempotent writes through the client against a real server (`Idempotency-Key` on POST).

These need the server side of issue 15: a POST repeated with the same `Idempotency-Key` is
answered with the first response (`Idempotent-Replayed: true`) instead of running again. A
DELETE has no such guard, so one whose answer was lost is not repeated.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from icodrip_client import APIConnectionError, Icodrip, NotFoundError, UnprocessableEntityError
from real_server import RealServer, Stage


@dataclass(frozen=True)
class World:
    server: RealServer
    admin: str


@pytest.fixture(scope="module")
def world(stage: Stage) -> World:
    admin = stage.key(stage.org())
    return World(stage.start(), admin)


@pytest.fixture
def client(world: World) -> Iterator[Icodrip]:
    with world.server.client(world.admin) as client:
        yield client


class LosesTheFirstAnswer(httpx.BaseTransport):
    """Sends every request to the real server, but the answer to the first request (a POST
    unless told) is lost on the way back (the connection breaks after the server has acted):
    a failure the real server cannot be made to produce on demand, so it is made here, in the
    transport."""

    def __init__(self, server: RealServer, method: str = "POST") -> None:
        self.inner = httpx.HTTPTransport(verify=server.tls)
        self.method = method
        self.sent: list[httpx.Request] = []
        self.answers: list[httpx.Response] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = self.inner.handle_request(request)
        if request.method == self.method and len(self.sent) == 1:
            response.read()
            response.close()
            raise httpx.ReadError("connection reset by peer", request=request)
        self.answers.append(response)
        return response

    def close(self) -> None:
        self.inner.close()


def named(client: Icodrip, name: str) -> list[str]:
    return [key.id for key in client.api_keys.list() if key.name == name]


def test_every_post_carries_an_idempotency_key_of_its_own(world: World) -> None:
    sent: list[httpx.Request] = []
    with (
        httpx.Client(verify=world.server.tls, event_hooks={"request": [sent.append]}) as http,
        Icodrip(api_key=world.admin, base_url=world.server.base_url, http_client=http) as client,
    ):
        client.affiliates.create(name="first")
        client.affiliates.create(name="second")
        client.affiliates.list()

    keys = [request.headers.get("idempotency-key") for request in sent]
    assert keys[0] and keys[1] and keys[0] != keys[1]
    assert str(uuid.UUID(keys[0])) == keys[0]
    assert keys[2] is None  # a GET is safe to repeat as it is


def test_a_post_whose_answer_was_lost_is_retried_and_creates_one_key(world: World) -> None:
    transport = LosesTheFirstAnswer(world.server)
    name = f"once {uuid.uuid4().hex[:8]}"

    with (
        httpx.Client(transport=transport) as http,
        Icodrip(
            api_key=world.admin,
            base_url=world.server.base_url,
            http_client=http,
            max_retry_delay=0.1,
        ) as client,
    ):
        created = client.api_keys.create(name=name)
        posts = [r for r in transport.sent if r.method == "POST"]
        assert len(posts) == 2  # the lost one and its retry
        assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
        assert transport.answers[0].headers.get("idempotent-replayed") == "true"
        assert named(client, name) == [created.id]
        assert created.key is not None  # the replay answers as the first answer did


def test_a_delete_whose_answer_was_lost_is_not_retried(world: World, client: Icodrip) -> None:
    """Its repeat would answer 404 for an endpoint the first one deleted: the lost answer is
    raised, and a GET tells what happened."""
    hook = client.webhooks.create(url="https://127.0.0.1:9/lost", events=["api_key.created"])
    transport = LosesTheFirstAnswer(world.server, method="DELETE")

    with (
        httpx.Client(transport=transport) as http,
        Icodrip(
            api_key=world.admin,
            base_url=world.server.base_url,
            http_client=http,
            max_retry_delay=0.1,
        ) as deleting,
        pytest.raises(APIConnectionError),
    ):
        deleting.webhooks.delete(hook.id)

    assert [request.method for request in transport.sent] == ["DELETE"]
    with pytest.raises(NotFoundError):
        client.webhooks.get(hook.id)  # the delete did happen


def test_the_same_idempotency_key_twice_creates_one_affiliate(client: Icodrip) -> None:
    key = f"affiliate-{uuid.uuid4()}"

    first = client.affiliates.create(name="Ana", idempotency_key=key)
    again = client.affiliates.create(name="Ana", idempotency_key=key)

    assert again.id == first.id
    assert [a.id for a in client.affiliates.list() if a.id == first.id] == [first.id]


def test_an_idempotency_key_reused_for_another_body_is_refused(client: Icodrip) -> None:
    key = f"reused-{uuid.uuid4()}"
    client.api_keys.create(name="one body", idempotency_key=key)

    with pytest.raises(UnprocessableEntityError) as caught:
        client.api_keys.create(name="another body", idempotency_key=key)

    assert caught.value.code == "idempotency_key_reused"
