"""While the store is unreachable, handlers answer 503 `store_unavailable` (at once, after the
first failure) and authentication keeps answering from memory; once a probe reaches the store
again, everything is served as before. (The same, against a crashed PostgreSQL under load, is
in `tests/faults/`.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from litestar.testing import TestClient

from adapters.settings import Settings
from api.auth import FAILED_ATTEMPTS_PER_MINUTE
from application.registry import IssuedKey
from bootstrap.api import api_process
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType, generate_key
from domain.plans import Plan
from support.windows import early_in_a_window


class Outage:
    """Makes the registry's reads, the key-lookup view and the health probe fail while `down`
    is true (or raise `failure`, when one is set)."""

    def __init__(self) -> None:
        self.failure: Exception | None = None
        self.calls = 0

    @property
    def down(self) -> bool:
        return self.failure is not None

    @down.setter
    def down(self, value: bool) -> None:
        self.failure = OperationalError("connection refused (simulated)") if value else None

    def wrap(self, method: Any) -> Any:
        def failing(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.failure is not None:
                raise self.failure
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
        patch.setattr(registry, "readable_org", outage.wrap(registry.readable_org))
        patch.setattr(health, "_probe", outage.wrap(health._probe))
        view = process.services.mirror.view
        patch.setattr(view, "find", outage.wrap(view.find))
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


def _unknown_key() -> dict[str, str]:
    return {"Authorization": f"Bearer {generate_key(KeyType.SECRET, Environment.LIVE)}"}


def test_a_key_the_mirror_lacks_is_503_store_unavailable_when_the_store_cannot_be_asked(
    served: tuple[TestClient[Any], IssuedKey, Outage],
) -> None:
    client, _, outage = served
    outage.down = True
    response = client.get("/v1/affiliates", headers=_unknown_key())
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "store_unavailable"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
    assert int(response.headers["retry-after"]) > 0
    # The store is now known to be down: the next unknown key is answered without asking it.
    asked = outage.calls
    again = client.get("/v1/affiliates", headers=_unknown_key())
    assert again.status_code == 503
    assert again.json()["error"]["code"] == "store_unavailable"
    assert outage.calls - asked <= 5  # only the background probe touched the "store"


def test_an_unexpected_failure_in_authentication_is_500_internal_error_in_the_contract_shape(
    served: tuple[TestClient[Any], IssuedKey, Outage],
) -> None:
    client, _, outage = served
    outage.failure = RuntimeError("a bug")
    response = client.get("/v1/affiliates", headers=_unknown_key())
    assert response.status_code == 500, response.text
    assert response.json()["error"]["code"] == "internal_error"
    assert "a bug" not in response.text
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


def test_unknown_keys_answered_503_while_the_store_is_down_still_count_as_failed_attempts(
    served: tuple[TestClient[Any], IssuedKey, Outage],
) -> None:
    client, _, outage = served
    asyncio.run(early_in_a_window())
    outage.down = True
    # The first finds the store down (then known to be down); the next are counted at once.
    statuses = [
        client.get("/v1/affiliates", headers=_unknown_key()).status_code
        for _ in range(FAILED_ATTEMPTS_PER_MINUTE + 2)
    ]
    assert set(statuses[:-1]) == {503}
    assert statuses[-1] == 429
