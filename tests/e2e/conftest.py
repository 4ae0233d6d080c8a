"""End-to-end fixtures: `icodrip` child processes, a test CA, a PostgreSQL deployment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness import Children, Pki, make_test_pki, postgres_deployment
from support.servers import NatsServer


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    """Start `icodrip` processes; all of them are stopped when the test ends, pass or fail."""
    started = Children(tmp_path / "children")
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and a server certificate it signed for 127.0.0.1 and localhost."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def deployment_env(
    nats_server: NatsServer, children: Children, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """`ICODRIP_*` for a fresh PostgreSQL database, the session NATS and the machine's Redis.

    The test's children are stopped before the database is dropped (a worker whose database
    vanishes under it does not stop promptly)."""
    with postgres_deployment(nats_server.url, tmp_path / "data") as env:
        try:
            yield env
        finally:
            children.stop_all()
