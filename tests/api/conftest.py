"""An API process on real NATS, Redis and the store, driven in-process over ASGI."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

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


#: Modules whose routes read a store with a table or a model of its own per backend (a read
#: model, the scoped rows, the event store's positions, its outage): they run on both key
#: stores. The rest run on SQLite only: above the application layer the API is the same code on
#: both, and its PostgreSQL side is covered by tests/application, tests/projections, tests/cli
#: and the PostgreSQL deployments of tests/e2e. (Halves the suite's longest directory.)
BOTH_STORES = frozenset(
    {
        "test_access_matrix",
        "test_affiliates",
        "test_api_keys",
        "test_audit_events",
        "test_audit_requests",
        "test_current_key",
        "test_events",
        "test_store_unavailable",
        "test_usage",
        "test_webhook_deliveries_api",
    }
)
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("store_env") == "postgres"
        in_api = item.path.parent == HERE
        if on_postgres and in_api and item.path.stem not in BOTH_STORES:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
