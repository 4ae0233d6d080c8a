"""A webhook worker killed -9 mid-delivery loses no event: `icodrip worker relay webhooks` runs
as a process group of its own, sends to a slow receiver (so a delivery is in flight), is
killed with SIGKILL and started again. Every key created, before the kill or while no worker
ran, then arrives at least once, signed per Standard Webhooks, and the delivery log shows each
delivery succeeded.

The delivery in flight at the kill was leased and never recorded: the new worker sends it
again, with the same `webhook-id`, once the lease (2 s here) has passed.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from uuid import UUID

import pytest
from standardwebhooks.webhooks import Webhook

from adapters.settings import Settings
from application.registry import KeyRegistry
from bootstrap.webhooks import webhooks_for
from domain.actors import OPERATOR
from domain.ids import format_key_id
from domain.key_format import Environment, KeyType
from domain.plans import Plan
from e2e.harness import Child, child_env
from projections.webhook_deliveries import Delivery, DeliveryStatus
from projections.webhook_delivery_store import open_delivery_log
from support.servers import NatsServer
from support.webhook_receiver import Received, Receiver, webhook_receiver

pytestmark = pytest.mark.slow

BEFORE_THE_KILL = 15
WHILE_DOWN = 5
#: Seconds the receiver takes to answer until the kill: a delivery is in flight when it comes.
SLOW = 1.5


@pytest.fixture
def worker(store_env: dict[str, str], private_nats: NatsServer, tmp_path: Path) -> Iterator[Child]:
    """`icodrip worker relay webhooks` on the test's store and NATS (not started yet)."""
    env = child_env(
        **store_env,
        ICODRIP_NATS_URL=private_nats.url,
        ICODRIP_WEBHOOKS_LEASE_SECONDS="2",
        ICODRIP_WEBHOOKS_ALLOW_PRIVATE="1",
        ICODRIP_WEBHOOKS_RETRY_SCALE="0.001",
    )
    child = Child("webhooks", ["worker", "relay", "webhooks"], env, tmp_path / "worker" / "log")
    yield child
    child.stop()


def kill_9(worker: Child) -> None:
    """SIGKILL to the worker's whole process group, as a crash would."""
    assert worker.proc is not None
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(10)


async def until(receiver: Receiver, done: int, what: str, worker: Child) -> None:
    """Wait until `done` distinct webhook-ids arrived; a failure quotes the worker's log."""
    try:
        await receiver.wait_for(lambda r: len(webhook_ids(r)) >= done, timeout=60, what=what)
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n{worker.describe()}") from None


async def all_recorded(settings: Settings, endpoint: UUID, count: int) -> list[Delivery]:
    """The endpoint's succeeded deliveries once there are `count` (or after 30 s): the worker
    records a success only once the receiver has answered."""
    log = open_delivery_log(settings)
    try:
        for _ in range(300):
            done = log.deliveries(endpoint, limit=100, status=DeliveryStatus.SUCCEEDED)
            if len(done) >= count:
                break
            await asyncio.sleep(0.1)
        return done
    finally:
        log.close()


def key_id(request: Received) -> str:
    """The id of the key an `api_key.created` event is about."""
    data = request.event["data"]
    assert isinstance(data, dict)
    return str(data["id"])


def webhook_ids(receiver: Receiver) -> Counter[str]:
    with receiver.lock:
        return Counter(r.headers["webhook-id"] for r in receiver.received)


async def test_a_webhook_worker_killed_mid_delivery_loses_no_event(
    settings: Settings, registry: KeyRegistry, worker: Child
) -> None:
    hooks = webhooks_for(registry, replace(settings, webhooks_allow_private=True))
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)

    def create_keys(count: int) -> list[str]:
        return [
            format_key_id(
                registry.create_key(
                    org.id, name="k", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
                ).key.id
            )
            for _ in range(count)
        ]

    with webhook_receiver(Receiver(delay=SLOW)) as receiver:
        added = hooks.add(OPERATOR, org.id, url=receiver.url, events=["api_key.created"])
        worker.start()
        created = create_keys(BEFORE_THE_KILL)
        await until(receiver, 3, "three deliveries before the kill", worker)
        kill_9(worker)  # the third is in flight: the receiver is still answering it
        with receiver.lock:
            in_flight = receiver.received[-1].headers["webhook-id"]
            arrived_before = len(receiver.received)

        created += create_keys(WHILE_DOWN)
        receiver.delay = 0.0  # the rest need not be slow
        worker.start()
        await until(receiver, len(created), "every event after the restart", worker)
        succeeded = await all_recorded(settings, added.endpoint.id, len(created))

    assert arrived_before < len(created)  # the kill came mid-stream
    ids = webhook_ids(receiver)
    assert len(ids) == len(created)
    assert ids[in_flight] >= 2, "the delivery in flight at the kill was sent again"
    hook = Webhook(added.secret)
    for request in receiver.received:
        hook.verify(request.body, request.headers)
    assert {key_id(r) for r in receiver.received} == set(created)
    assert len(succeeded) == len(created), worker.describe()
    assert {d.msg_id for d in succeeded} == set(ids)
