"""`client.webhooks` against a real server, and `icodrip_client.webhooks.verify` against the
server's own signer (`domain.webhook_signing`, as the webhook worker signs deliveries)."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from domain.webhook_signing import webhook_headers
from icodrip_client import Icodrip, NotFoundError, WebhookVerificationError, webhooks
from real_server import RealServer, Stage

URL = "https://127.0.0.1:9/hooks/icodrip"  # accepted: the server runs with private URLs allowed


@dataclass(frozen=True)
class World:
    server: RealServer
    admin: str


@pytest.fixture(scope="module")
def world(stage: Stage) -> World:
    admin = stage.key(stage.org())
    return World(stage.start(), admin)


@pytest.fixture
def client(world: World) -> Iterator[Icodrip]:
    with world.server.client(world.admin) as client:
        yield client


@pytest.fixture(scope="module")
def secret(world: World) -> str:
    """A real endpoint's signing secret, as the API shows it once."""
    with world.server.client(world.admin) as client:
        endpoint = client.webhooks.create(url=URL, events=["api_key.revoked"])
    assert endpoint.secret is not None
    return endpoint.secret


def signed(secrets: list[str], body: bytes, at: float | None = None) -> dict[str, str]:
    """The headers the server's signer puts on a delivery of `body`."""
    stamp = int(time.time() if at is None else at)
    return webhook_headers(secrets, f"msg_{uuid.uuid4().hex}", stamp, body)


def another_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


PAYLOAD = json.dumps({"type": "api_key.revoked", "data": {"id": "key_" + "a" * 32}}).encode()


def test_an_endpoint_is_created_changed_rotated_and_deleted(client: Icodrip) -> None:
    endpoint = client.webhooks.create(
        url=URL, events=["api_key.created", "api_key.revoked"], description="pager"
    )
    assert endpoint.secret is not None and endpoint.secret.startswith("whsec_")
    assert endpoint.secret not in repr(endpoint)
    assert client.webhooks.get(endpoint.id).secret is None  # shown once
    assert endpoint.id in [listed.id for listed in client.webhooks.list()]

    changed = client.webhooks.update(endpoint.id, description="on call", enabled=False)
    assert (changed.description, changed.status) == ("on call", "disabled")
    rotated = client.webhooks.rotate_secret(endpoint.id)
    assert rotated.secret not in (None, endpoint.secret)
    assert rotated.previous_secret_expires_at is not None

    deleted = client.webhooks.delete(endpoint.id)
    assert deleted.deleted
    with pytest.raises(NotFoundError):
        client.webhooks.get(endpoint.id)


def test_a_test_is_requested_and_deliveries_are_listed(client: Icodrip) -> None:
    endpoint = client.webhooks.create(url=URL, events=["api_key.created"])

    asked = client.webhooks.test(endpoint.id)
    page = client.webhooks.deliveries.list(endpoint.id, limit=5)

    assert (asked.webhook_id, asked.status) == (endpoint.id, "requested")
    assert all(delivery.webhook_id == endpoint.id for delivery in page.data)
    with pytest.raises(NotFoundError):
        client.webhooks.deliveries.get(endpoint.id, "whd_" + "0" * 32)


def test_verify_accepts_a_message_the_server_signed(secret: str) -> None:
    event = webhooks.verify(PAYLOAD, signed([secret], PAYLOAD), secret)

    assert event["type"] == "api_key.revoked"


def test_verify_accepts_either_secret_during_a_rotation(secret: str) -> None:
    newer = another_secret()
    headers = signed([newer, secret], PAYLOAD)  # both sign while the old one overlaps

    assert webhooks.verify(PAYLOAD, headers, secret)["type"] == "api_key.revoked"
    assert webhooks.verify(PAYLOAD, headers, [newer])["type"] == "api_key.revoked"


def test_verify_refuses_a_tampered_body(secret: str) -> None:
    headers = signed([secret], PAYLOAD)
    tampered = PAYLOAD.replace(b"revoked", b"created")

    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        webhooks.verify(tampered, headers, secret)


def test_verify_refuses_a_stale_timestamp(secret: str) -> None:
    headers = signed([secret], PAYLOAD, at=time.time() - 6 * 60)

    with pytest.raises(WebhookVerificationError, match="too old"):
        webhooks.verify(PAYLOAD, headers, secret)


def test_verify_refuses_another_secret(secret: str) -> None:
    other = another_secret()

    with pytest.raises(WebhookVerificationError):
        webhooks.verify(PAYLOAD, signed([other], PAYLOAD), secret)


def test_verify_refuses_a_message_without_its_signature(secret: str) -> None:
    headers = signed([secret], PAYLOAD)
    del headers["webhook-signature"]

    with pytest.raises(WebhookVerificationError, match="webhook-signature"):
        webhooks.verify(PAYLOAD, headers, secret)


def test_verify_reads_headers_in_any_case(secret: str) -> None:
    headers = {name.title(): value for name, value in signed([secret], PAYLOAD).items()}

    assert webhooks.verify(PAYLOAD.decode(), headers, secret)["type"] == "api_key.revoked"


def test_sign_makes_the_signature_the_server_makes(secret: str) -> None:
    headers = signed([secret], PAYLOAD)

    mine = webhooks.sign(PAYLOAD, secret, headers["webhook-id"], int(headers["webhook-timestamp"]))

    assert mine == headers["webhook-signature"]
