"""`AsyncIcodrip` against a real server: the same surface as `Icodrip`, awaited."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from icodrip_client import AsyncIcodrip, AsyncPage, ConflictError, NotFoundError
from real_server import RealServer, Stage


@dataclass(frozen=True)
class World:
    server: RealServer
    admin: str


@pytest.fixture(scope="module")
def world(stage: Stage) -> World:
    admin = stage.key(stage.org(), name="async admin")
    return World(stage.start(), admin)


@pytest.fixture
async def client(world: World) -> AsyncIterator[AsyncIcodrip]:
    async with world.server.async_client(world.admin) as client:
        yield client


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


async def test_current_is_the_key_the_client_calls_with(client: AsyncIcodrip) -> None:
    me = await client.api_keys.current()

    assert (me.name, me.status) == ("async admin", "active")
    assert client.rate_limit is not None and client.rate_limit.limit == 100


async def test_a_created_key_is_rolled_and_revoked(client: AsyncIcodrip) -> None:
    new = await client.api_keys.create(name=unique("async"))
    successor = await client.api_keys.roll(new.id, expire_in_seconds=0)
    revoked = await client.api_keys.revoke(successor.id, reason="async test")

    assert successor.rolled_from == new.id and successor.key is not None
    assert revoked.status == "revoked"
    with pytest.raises(ConflictError) as caught:
        await client.api_keys.roll(new.id)
    assert caught.value.code == "api_key_already_rolled"


async def test_async_for_over_list_yields_every_key_of_every_page(client: AsyncIcodrip) -> None:
    """Needs `GET /v1/api-keys` to page by `limit` and `cursor` (issue 15's server side)."""
    made = {(await client.api_keys.create(name=unique("paged"))).id for _ in range(3)}

    every = [key.id async for key in client.api_keys.list(limit=2)]
    first = await client.api_keys.list(limit=2)

    assert made <= set(every) and len(every) == len(set(every))
    assert isinstance(first, AsyncPage) and len(first.data) == 2
    pages = [page async for page in first.iter_pages()]
    assert len(pages) > 1
    assert [key.id for page in pages for key in page.data] == every


async def test_an_unknown_key_id_is_not_found(client: AsyncIcodrip) -> None:
    with pytest.raises(NotFoundError) as caught:
        await client.api_keys.get("key_" + "f" * 32)

    assert caught.value.code == "not_found"


async def test_concurrent_calls_share_one_client(client: AsyncIcodrip) -> None:
    answers = await asyncio.gather(*(client.api_keys.current() for _ in range(10)))

    assert len({me.id for me in answers}) == 1
    assert client.rate_limit is not None and client.rate_limit.remaining is not None


async def test_affiliates_and_webhooks_are_there_too(client: AsyncIcodrip) -> None:
    affiliate = await client.affiliates.create(name=unique("async affiliate"))
    endpoint = await client.webhooks.create(
        url="https://127.0.0.1:9/async", events=["api_key.created"]
    )

    assert (await client.affiliates.get(affiliate.id)).name == affiliate.name
    assert endpoint.id in [hook.id async for hook in client.webhooks.list()]
    assert (await client.webhooks.delete(endpoint.id)).deleted


async def test_tracked_events_are_listed_back_with_async_for(client: AsyncIcodrip) -> None:
    name = unique("async event")
    tracked = await client.events.track_batch(
        [{"event": name, "properties": {"n": n}} for n in range(3)]
    )

    listed = [event async for event in client.events.list(limit=2) if event.event == name]
    first = await client.events.list(limit=2)

    assert [event.id for event in listed] == [event.id for event in tracked]
    assert first.next_cursor is not None  # more than one page
