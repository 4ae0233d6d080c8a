"""When Redis goes away the API keeps answering, still limited, and returns to Redis by itself."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
import redis

from adapters.settings import Settings
from api.process import ApiProcess
from support.api import Api, bearer, serving
from support.servers import NatsServer, RedisServer


@pytest.fixture
async def api_on_private_redis(
    settings: Settings, nats_server: NatsServer, private_redis: RedisServer
) -> AsyncIterator[Api]:
    process = ApiProcess(
        dataclasses.replace(settings, nats_url=nats_server.url, redis_url=private_redis.url)
    )
    async with serving(process) as api:
        yield api


async def test_requests_are_answered_and_limited_while_redis_is_down_and_after(
    api_on_private_redis: Api, private_redis: RedisServer
) -> None:
    api = api_on_private_redis
    issued = await api.key(api.org())
    assert (await api.client.get("/v1/affiliates", headers=bearer(issued))).status_code == 200

    private_redis.kill()
    during = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert during.status_code == 200  # fail-open, from the in-process limiter
    assert during.headers["x-ratelimit-limit"] == "100"

    private_redis.start()
    counter = redis.Redis.from_url(private_redis.url)
    for _ in range(50):  # the limiter probes Redis about once a second
        await asyncio.sleep(0.1)
        await api.client.get("/v1/affiliates", headers=bearer(issued))
        if counter.keys("icodrip:rl:*"):
            break
    assert counter.keys("icodrip:rl:*"), "the limiter did not return to Redis"
