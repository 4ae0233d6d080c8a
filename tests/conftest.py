"""Fixtures for real servers: NATS from the pinned wheel, the machine's PostgreSQL and Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.settings import Settings
from application.registry import KeyRegistry
from application.stores import open_registry
from support.databases import fresh_database
from support.servers import NatsServer, RedisServer

REDIS_URL = os.environ.get("ICODRIP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One JetStream server for the session; tests use their own stream names."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A JetStream server of this test's own, safe to kill -9 and restart."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, safe to kill and restart."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the session, dropped at the end."""
    with fresh_database("session") as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis (tests namespace their keys)."""
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """`ICODRIP_*` variables naming a new, empty store of the parametrized kind."""
    env = {
        "ICODRIP_DATA_DIR": str(tmp_path / "data"),
        "ICODRIP_KEY_PEPPER": "test-pepper-" + uuid.uuid4().hex,
        "ICODRIP_KEYS_STREAM": f"KEYS_{uuid.uuid4().hex[:8]}",
    }
    env["ICODRIP_KEYS_SUBJECT"] = f"test.{env['ICODRIP_KEYS_STREAM'].lower()}"
    if request.param == "sqlite":
        yield env
        return
    with fresh_database("relay") as url:
        env["ICODRIP_DATABASE_URL"] = url
        yield env


@pytest.fixture
def settings(store_env: dict[str, str]) -> Settings:
    return Settings.from_env(store_env)


@pytest.fixture
def registry(settings: Settings) -> Iterator[KeyRegistry]:
    app = open_registry(settings)
    yield app
    app.close()
