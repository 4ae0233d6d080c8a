"""While the store is unreachable, handlers answer 503 `store_unavailable` (at once, after the
first failure) and authentication keeps answering from memory; once a probe reaches the store
again, everything is served as before. (The same, against a crashed PostgreSQL under load, is
in `tests/faults/`.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from litestar.testing import TestClient

from adapters.settings import Settings
from application.registry import IssuedKey
from bootstrap.api import api_process
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.plans import Plan


class Outage:
    """Makes the registry's reads and the health probe fail while `down` is true."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def wrap(self, method: Any) -> Any:
        def failing(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.down:
                raise OperationalError("connection refused (simulated)")
            return method(*args, **kwargs)

        return failing


@pytest.fixture
def served(tmp_path: Any) -> Iterator[tuple[TestClient[Any], IssuedKey, Outage]]:
    settings = Settings.from_env(
        {"ICODRIP_DATA_DIR": str(tmp_path), "ICODRIP_KEY_PEPPER": "outage-" + uuid.uuid4().hex}
    )
    process = api_process(settings)
    registry = process.services.registry
    org = registry.register_organization("Outage", Plan.PRO, OPERATOR)
    key = registry.create_key(
        org.id, name="k", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    outage = Outage()
    health = process.litestar.state.store_health
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "keys_for", outage.wrap(registry.keys_for))
        patch.setattr(health, "_probe", outage.wrap(health._probe))
        with TestClient(app=process.app, base_url="https://api.test") as client:
            yield client, key, outage


def test_a_store_error_is_503_store_unavailable_with_retry_after(
    served: tuple[TestClient[Any], IssuedKey, Outage],
) -> None:
    client, key, outage = served
    outage.down = True
    response = client.get("/v1/api-keys", headers={"Authorization": f"Bearer {key.secret}"})
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "store_unavailable"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
    assert int(response.headers["retry-after"]) > 0


def test_while_the_store_is_down_handlers_are_refused_at_once_and_auth_still_answers(
    served: tuple[TestClient[Any], IssuedKey, Outage],
) -> None:
    client, key, outage = served
    headers = {"Authorization": f"Bearer {key.secret}"}
    outage.down = True
    assert client.get("/v1/api-keys", headers=headers).status_code == 503
    before = outage.calls
    # Affiliates do not go through the failing registry: refused by the gate, not by a failure.
    gated = client.get("/v1/affiliates", headers=headers)
    assert gated.status_code == 503
    assert gated.json()["error"]["code"] == "store_unavailable"
    # Authentication and its refusals still come from memory, before the gate.
    bad = client.get("/v1/affiliates", headers={"Authorization": "Bearer ak_live_nope"})
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "malformed_api_key"
    assert client.get("/healthz").status_code == 200
    assert outage.calls - before <= 5  # only the background probe touched the "store"


def test_once_the_store_answers_again_requests_are_served(
    served: tuple[TestClient[Any], IssuedKey, Outage],
) -> None:
    client, key, outage = served
    headers = {"Authorization": f"Bearer {key.secret}"}
    outage.down = True
    assert client.get("/v1/api-keys", headers=headers).status_code == 503
    outage.down = False
    deadline = time.monotonic() + 10
    status = 503
    while status == 503 and time.monotonic() < deadline:
        status = client.get("/v1/affiliates", headers=headers).status_code
        time.sleep(0.05)
    assert status == 200
    assert client.get("/v1/api-keys", headers=headers).status_code == 200
