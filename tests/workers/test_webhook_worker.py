"""The webhook worker on real NATS and a real receiver: each key event arrives once, signed.

The relay puts the key store's events on the key stream; the webhook worker fans them out into
the delivery log and sends them; the expiry worker retires a key whose time is up. A receiver
on 127.0.0.1 records what it got, and `standardwebhooks` (the specification's own package)
verifies every signature.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from adapters.settings import Settings
from application.registry import KeyRegistry
from application.stores import open_registry
from application.webhooks import Webhooks
from bootstrap.webhooks import webhooks_for
from bootstrap.workers import run_workers
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.plans import Plan
from projections.webhook_deliveries import DeliveryStatus
from projections.webhook_delivery_store import open_delivery_log
from support.servers import NatsServer
from support.webhook_receiver import Receiver, webhook_receiver

ALL_KEY_EVENTS = [
    "api_key.created",
    "api_key.rolled",
    "api_key.revoked",
    "api_key.expiring",
    "api_key.expired",
    "api_key.exposed",
]


@pytest.fixture
def worker_settings(
    store_env: dict[str, str], private_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.setenv("ICODRIP_WEBHOOKS_RETRY_SCALE", "0.001")  # 5 s becomes 5 ms
    return Settings.from_env(
        {**store_env, "ICODRIP_NATS_URL": private_nats.url, "ICODRIP_WEBHOOKS_ALLOW_PRIVATE": "1"}
    )


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[None]:
    """The relay, key lookup, expiry and webhook workers, until the block ends."""
    stopping = asyncio.Event()
    names = ["relay", "key-lookup", "expiry", "webhooks"]
    task = asyncio.create_task(
        run_workers(settings, names, stopping=stopping, handle_signals=False)
    )
    try:
        yield
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
def registry_and_hooks(worker_settings: Settings) -> tuple[KeyRegistry, Webhooks]:
    registry = open_registry(worker_settings)
    return registry, webhooks_for(registry, worker_settings)


def verified(receiver: Receiver, secret: str) -> list[str]:
    """The event types received, each signature checked by `standardwebhooks`."""
    hook = Webhook(secret)
    for item in receiver.received:
        try:
            hook.verify(item.body, item.headers)
        except WebhookVerificationError as error:
            raise AssertionError(f"{error}: {item.headers} {item.body!r}") from error
    return receiver.types()


async def test_each_key_event_reaches_the_receiver_once_signed_per_standard_webhooks(
    worker_settings: Settings, registry_and_hooks: tuple[KeyRegistry, Webhooks], tmp_path: Path
) -> None:
    registry, hooks = registry_and_hooks
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    with webhook_receiver() as receiver:
        added = hooks.add(OPERATOR, org.id, url=receiver.url, events=ALL_KEY_EVENTS)
        async with running(worker_settings):
            first = registry.create_key(
                org.id, name="one", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
            )
            second = registry.roll_key(first.key.id, grace=timedelta(hours=1), actor=OPERATOR)
            registry.revoke_key(second.key.id, actor=OPERATOR, reason="done with it")
            registry.create_key(
                org.id,
                name="short-lived",
                env=Environment.LIVE,
                key_type=KeyType.SECRET,
                actor=OPERATOR,
                expires_at=datetime.now(UTC) + timedelta(seconds=2),
            )
            await receiver.wait_for(
                lambda r: "api_key.expired" in r.types(), timeout=30, what="the expiry"
            )
            await asyncio.sleep(1.0)  # anything sent twice would arrive by now
    types = verified(receiver, added.secret)
    assert sorted(types) == sorted(
        [
            "api_key.created",  # one
            "api_key.rolled",  # one
            "api_key.created",  # its successor
            "api_key.revoked",  # the successor
            "api_key.created",  # short-lived
            "api_key.expiring",  # short-lived, due at once
            "api_key.expired",  # short-lived
        ]
    )
    assert len({r.headers["webhook-id"] for r in receiver.received}) == len(types)
    revoked = receiver.of_type("api_key.revoked")[0].event
    data = revoked["data"]
    assert isinstance(data, dict)
    assert data["id"].startswith("key_") and data["status"] == "revoked"
    assert "key" not in data and "key_hash" not in str(revoked)
    assert first.secret not in str([r.body for r in receiver.received])


async def test_a_receiver_failing_twice_gets_the_same_webhook_id_three_times(
    worker_settings: Settings, registry_and_hooks: tuple[KeyRegistry, Webhooks]
) -> None:
    registry, hooks = registry_and_hooks
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    with webhook_receiver(Receiver(statuses=[500, 500])) as receiver:
        added = hooks.add(OPERATOR, org.id, url=receiver.url, events=["api_key.created"])
        async with running(worker_settings):
            registry.create_key(
                org.id, name="one", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
            )
            await receiver.wait_for(lambda r: len(r.received) >= 3, what="three attempts")
            await asyncio.sleep(0.5)
    assert len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    verified(receiver, added.secret)
    log = open_delivery_log(worker_settings)
    try:
        (delivery,) = log.deliveries(added.endpoint.id, limit=10)
        attempts = log.attempts([delivery.id])[delivery.id]
    finally:
        log.close()
    assert delivery.status is DeliveryStatus.SUCCEEDED
    assert [a.status_code for a in attempts] == [500, 500, 200]
    assert attempts[0].excerpt == "receiver says no"


async def test_events_of_the_other_environment_and_unsubscribed_types_are_not_sent(
    worker_settings: Settings, registry_and_hooks: tuple[KeyRegistry, Webhooks]
) -> None:
    registry, hooks = registry_and_hooks
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    with webhook_receiver() as receiver:
        hooks.add(
            OPERATOR, org.id, url=receiver.url, events=["api_key.revoked"], env=Environment.TEST
        )
        async with running(worker_settings):
            live = registry.create_key(
                org.id, name="live", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
            )
            test = registry.create_key(
                org.id, name="test", env=Environment.TEST, key_type=KeyType.SECRET, actor=OPERATOR
            )
            registry.revoke_key(live.key.id, actor=OPERATOR)
            registry.revoke_key(test.key.id, actor=OPERATOR)
            await receiver.wait_for(lambda r: len(r.received) >= 1, what="the test key's revoke")
            await asyncio.sleep(1.0)
    assert receiver.types() == ["api_key.revoked"]
    data = receiver.received[0].event["data"]
    assert isinstance(data, dict) and data["env"] == "test"


async def test_a_test_request_reaches_a_disabled_endpoint_and_others_hear_it_was_disabled(
    worker_settings: Settings, registry_and_hooks: tuple[KeyRegistry, Webhooks]
) -> None:
    registry, hooks = registry_and_hooks
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    with webhook_receiver() as watcher, webhook_receiver() as other:
        hooks.add(OPERATOR, org.id, url=watcher.url, events=["webhook.disabled"])
        target = hooks.add(OPERATOR, org.id, url=other.url, events=["api_key.created"])
        async with running(worker_settings):
            hooks.change(OPERATOR, target.endpoint.id, enabled=False)
            hooks.request_test(OPERATOR, target.endpoint.id)
            await watcher.wait_for(lambda r: len(r.received) >= 1, what="webhook.disabled")
            await other.wait_for(lambda r: len(r.received) >= 1, what="the test event")
    assert watcher.types() == ["webhook.disabled"]
    data = watcher.received[0].event["data"]
    assert isinstance(data, dict) and data["status"] == "disabled" and "secret" not in data
    assert other.types() == ["webhook.test"]
