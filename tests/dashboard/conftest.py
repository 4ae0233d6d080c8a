"""The dashboard for tests: over HTTPS with Chromium (real NATS, Redis, SQLite), or in-process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from adapters.settings import Settings
from conftest import REDIS_URL
from dashboard.asgi import Dashboard, serving_dashboard, settings_for
from dashboard.harness import Browsing, DashboardServer, chromium
from e2e.harness import Children
from support.servers import NatsServer


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    """`icodrip` child processes, stopped when the test ends."""
    started = Children(tmp_path / "children")
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots of this run go (under pytest's temporary directory)."""
    return tmp_path_factory.getbasetemp() / "artifacts"


@pytest.fixture(scope="session")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    """The service, with a JetStream server of its own: its audit worker's durable consumer
    must not share messages with the workers other tests start on the session's server."""
    nats_server = NatsServer(tmp_path_factory.mktemp("dashboard-nats"))
    nats_server.start()
    stream = f"KEYS_DASH_{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env(
        {
            "ICODRIP_DATA_DIR": str(tmp_path_factory.mktemp("dashboard") / "data"),
            "ICODRIP_KEY_PEPPER": "dashboard-pepper-" + uuid.uuid4().hex,
            "ICODRIP_NATS_URL": nats_server.url,
            "ICODRIP_REDIS_URL": REDIS_URL,
            "ICODRIP_KEYS_STREAM": stream,
            "ICODRIP_KEYS_SUBJECT": f"test.{stream.lower()}",
        }
    )
    try:
        server = DashboardServer(settings).start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        nats_server.stop()


@pytest.fixture
async def browsing(dashboard_server: DashboardServer, artifacts: Path) -> AsyncIterator[Browsing]:
    async with chromium(dashboard_server.url, artifacts) as browsing:
        yield browsing


@pytest.fixture
async def dashboard(tmp_path: Path) -> AsyncIterator[Dashboard]:
    """The dashboard in-process over ASGI (no browser, no NATS), sessions in the machine's Redis."""
    async with serving_dashboard(settings_for(tmp_path / "data", REDIS_URL)) as dash:
        yield dash
