"""An API process on real NATS, Redis and the store, driven in-process over ASGI."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from adapters.settings import Settings
from bootstrap.api import api_process
from support.api import Api, serving
from support.servers import NatsServer


@pytest.fixture
def api_settings(settings: Settings, nats_server: NatsServer, redis_url: str) -> Settings:
    return dataclasses.replace(settings, nats_url=nats_server.url, redis_url=redis_url)


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[Api]:
    process = api_process(api_settings, trusted_proxies=["10.0.0.0/8"])
    async with serving(process) as api:
        yield api
