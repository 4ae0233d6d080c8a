"""An API process on real NATS, Redis and the store, driven in-process over ASGI."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator

import httpx
import pytest

from adapters.settings import Settings
from api.process import ApiProcess
from support.api import Api
from support.servers import NatsServer


@pytest.fixture
def api_settings(settings: Settings, nats_server: NatsServer, redis_url: str) -> Settings:
    return dataclasses.replace(settings, nats_url=nats_server.url, redis_url=redis_url)


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[Api]:
    process = ApiProcess(api_settings, trusted_proxies=["10.0.0.0/8"])
    await process.start()
    # A client address of its own, so per-address limits of other tests do not interfere.
    address = "127." + ".".join(str(random.randint(1, 254)) for _ in range(3))
    transport = httpx.ASGITransport(app=process.app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
        yield Api(process, client, process.services.registry)
    await process.stop()
