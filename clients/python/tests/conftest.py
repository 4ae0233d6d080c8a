"""The client's tests run against a real server: one per test module (see `real_server`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.harness import Pki, make_test_pki
from real_server import Stage


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and a server certificate it signed for 127.0.0.1."""
    return make_test_pki(tmp_path_factory.mktemp("sdk-pki"))


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Stage]:
    """A data dir and its operator; the module mints what it needs, then starts the server."""
    stage = Stage(tmp_path_factory.mktemp("sdk-server"), pki)
    try:
        yield stage
    finally:
        stage.stop()
