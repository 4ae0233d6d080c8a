"""A webhook endpoint's events travel on the bus with public fields only: never its secret,
nor the salt that derives it."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from adapters.key_events import encode, to_message
from domain.actors import OPERATOR, SYSTEM
from domain.key_format import Environment
from domain.webhook import WebhookEndpoint, WebhookEventType

PEPPER = b"a-server-side-pepper-of-32-bytes"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_no_event_of_an_endpoint_puts_its_secret_or_salt_on_the_bus() -> None:
    endpoint = WebhookEndpoint.add(
        uuid4(),
        env=Environment.LIVE,
        url="https://hooks.example.com/in",
        events=(WebhookEventType.API_KEY_REVOKED,),
        description="billing",
        actor=OPERATOR,
    )
    secrets = endpoint.secrets(PEPPER, NOW)
    salts = [endpoint.salt]
    endpoint.rotate_secret(OPERATOR, NOW)
    secrets += endpoint.secrets(PEPPER, NOW)
    salts.append(endpoint.salt)
    endpoint.change(OPERATOR, url="https://hooks.example.com/v2")
    endpoint.disable(SYSTEM, "failing for 5 days")
    endpoint.request_retry("whd_" + "0" * 32, OPERATOR)
    events = endpoint.collect_events()
    wires = [encode(to_message(n, e)) for n, e in enumerate(events, 1)]
    for wire in wires:
        for hidden in [*secrets, *salts]:
            assert hidden.encode() not in wire
    types = [to_message(1, e).type for e in events]
    assert types == [
        "webhook.created",
        "webhook.secret_rotated",
        "webhook.changed",
        "webhook.disabled",
        "webhook.retry_requested",
    ]
    created = to_message(1, events[0])
    assert created.aggregate_id == f"we_{endpoint.id.hex}"
    assert created.data["url"] == "https://hooks.example.com/in"
