"""When Redis goes away the API keeps answering, still limited, and returns to Redis by itself."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
import redis

from adapters.settings import Settings
from bootstrap.api import api_process
from domain.key_format import Environment, KeyType, generate_key
from support.api import Api, assert_error, bearer, serving
from support.servers import NatsServer, RedisServer


@pytest.fixture
async def api_on_private_redis(
    settings: Settings, nats_server: NatsServer, private_redis: RedisServer
) -> AsyncIterator[Api]:
    process = api_process(
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


@pytest.fixture
async def fail_closed_api(
    settings: Settings, nats_server: NatsServer, private_redis: RedisServer
) -> AsyncIterator[Api]:
    process = api_process(
        dataclasses.replace(settings, nats_url=nats_server.url, redis_url=private_redis.url),
        rate_limit_fail_closed=True,
    )
    async with serving(process) as api:
        yield api


async def test_with_fail_closed_limits_and_redis_down_a_key_is_told_503_limiter_unavailable(
    fail_closed_api: Api, private_redis: RedisServer
) -> None:
    api = fail_closed_api
    issued = await api.key(api.org())
    assert (await api.client.get("/v1/affiliates", headers=bearer(issued))).status_code == 200

    private_redis.kill()
    during = await api.client.get("/v1/affiliates", headers=bearer(issued))

    assert_error(during, 503, "rate_limiter_unavailable")
    assert 1 <= int(during.headers["retry-after"]) <= 5
    # Nothing was counted, so no numbers are claimed for the key's window.
    assert "x-ratelimit-remaining" not in during.headers
    assert "ratelimit" not in during.headers


async def test_with_fail_closed_limits_and_redis_down_a_wrong_key_is_told_503_too(
    fail_closed_api: Api, private_redis: RedisServer
) -> None:
    private_redis.kill()
    stranger = generate_key(KeyType.SECRET, Environment.LIVE)
    response = await fail_closed_api.client.get("/v1/affiliates", headers=bearer(stranger))
    # Not 429 too_many_failed_attempts (nothing was counted), and not 401 either: a guesser
    # must not tell a wrong key from a right one while the right one is answered 503.
    assert_error(response, 503, "rate_limiter_unavailable")
    assert int(response.headers["retry-after"]) >= 1


async def test_a_post_with_an_idempotency_key_is_refused_while_redis_is_down(
    api_on_private_redis: Api, private_redis: RedisServer
) -> None:
    api = api_on_private_redis
    issued = await api.key(api.org())
    headers = {**bearer(issued), "Idempotency-Key": "during-the-outage"}
    private_redis.kill()
    refused = await api.client.post("/v1/affiliates", json={"name": "a"}, headers=headers)
    assert_error(refused, 503, "idempotency_unavailable")
    assert refused.headers["retry-after"] == "1"
    # Without the header the request is answered (its author did not ask for the guarantee).
    plain = await api.client.post("/v1/affiliates", json={"name": "a"}, headers=bearer(issued))
    assert plain.status_code == 201
    listing = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert [a["name"] for a in listing.json()["data"]] == ["a"]


async def test_tracked_events_are_stored_unguarded_while_redis_is_down(
    api_on_private_redis: Api, private_redis: RedisServer
) -> None:
    api = api_on_private_redis
    issued = await api.key(api.org())
    headers = {**bearer(issued), "Idempotency-Key": "browser-batch"}
    private_redis.kill()
    tracked = await api.client.post("/v1/events", json={"event": "view"}, headers=headers)
    assert tracked.status_code == 202, tracked.text  # losing it would be worse than a repeat
