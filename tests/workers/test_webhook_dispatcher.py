"""The webhook dispatcher on a clock of the test's own, against a real receiver on 127.0.0.1.

A failed delivery is tried again on the schedule (5 s, then 5 min, …, each ±20 %) and given up
three days after its first attempt; an endpoint failing without a single success for five days
is disabled by the system, which stores `webhook.disabled`; one success ends the failing run;
a deleted endpoint's delivery fails without a request; a delivery leased by a worker that died
is sent again by another only once the lease has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from standardwebhooks.webhooks import Webhook

from adapters.key_events import KeyEventMessage, to_message
from adapters.settings import Settings
from adapters.webhook_sender import WebhookSender
from application.registry import KeyRegistry
from application.stores import open_registry
from application.webhooks import EndpointWithSecret, Webhooks
from bootstrap.webhooks import webhooks_for
from domain.actors import OPERATOR, SYSTEM
from domain.organization import Organization
from domain.plans import Plan
from projections.webhook_deliveries import Delivery, DeliveryLog, DeliveryStatus, NewDelivery
from projections.webhook_delivery_store import open_delivery_log
from support.servers import free_port
from support.webhook_api import delivery_to
from support.webhook_receiver import Receiver, webhook_receiver
from workers.webhook_delivery import Dispatcher

DAY = 86_400.0
#: The promises, in days: retries stop after three, an endpoint failing for five is disabled.
THREE_DAYS, FIVE_DAYS = 3 * DAY, 5 * DAY
LEASE = 60.0


@dataclass
class Clock:
    """The dispatcher's time: it moves only when the test moves it."""

    now: float

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class World:
    registry: KeyRegistry
    hooks: Webhooks
    log: DeliveryLog
    dispatcher: Dispatcher
    clock: Clock
    org: Organization

    def add_endpoint(self, url: str) -> EndpointWithSecret:
        return self.hooks.add(OPERATOR, self.org.id, url=url, events=["api_key.created"])

    def enqueue(self, endpoint: EndpointWithSecret) -> str:
        """A delivery to the endpoint, due now by the clock; its id."""
        delivery: NewDelivery = delivery_to(
            endpoint.endpoint.id, self.org.id, created_at=self.clock()
        )
        assert self.log.enqueue([delivery]) == 1
        return delivery.id

    def delivery(self, delivery_id: str) -> Delivery:
        found = self.log.get(delivery_id)
        assert found is not None
        return found

    async def send_due(self) -> list[Delivery]:
        """One round of the dispatcher's work: claim what is due now, attempt each."""
        claimed = self.log.claim_due(self.clock(), lease=LEASE, limit=10)
        for delivery in claimed:
            await self.dispatcher.deliver(delivery)
        return claimed

    def enabled(self, endpoint: EndpointWithSecret) -> bool:
        return self.registry.get_webhook(endpoint.endpoint.id).enabled

    def stored(self, endpoint: EndpointWithSecret) -> list[KeyEventMessage]:
        """The endpoint's stored events as the relay would publish them, oldest first."""
        events = self.registry.recorder.select_events(endpoint.endpoint.id)
        return [to_message(0, self.registry.mapper.to_domain_event(e)) for e in events]


@pytest.fixture
async def world(store_env: dict[str, str]) -> AsyncIterator[World]:
    settings = Settings.from_env({**store_env, "ICODRIP_WEBHOOKS_ALLOW_PRIVATE": "1"})
    registry = open_registry(settings)
    log = open_delivery_log(settings)
    hooks = webhooks_for(registry, settings)
    sender = WebhookSender(allow_private=True, timeout=2.0)
    clock = Clock(time.time())
    dispatcher = Dispatcher(log, hooks, sender, lease=LEASE, clock=clock)
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    try:
        yield World(registry, hooks, log, dispatcher, clock, org)
    finally:
        await sender.aclose()
        log.close()
        registry.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as listening:
        yield listening


def nobody_listening() -> str:
    """A URL on 127.0.0.1 where every connection is refused."""
    return f"http://127.0.0.1:{free_port()}/hooks"


@contextlib.asynccontextmanager
async def dispatching(dispatcher: Dispatcher) -> AsyncIterator[None]:
    """The dispatcher's own loop, until the block ends."""
    stopping = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stopping))
    try:
        yield
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)


async def test_a_refused_connection_is_tried_again_after_5_seconds_then_5_minutes(
    world: World,
) -> None:
    endpoint = world.add_endpoint(nobody_listening())
    sent = world.enqueue(endpoint)

    await world.send_due()
    failed_once = world.delivery(sent)
    assert failed_once.status is DeliveryStatus.PENDING
    assert (failed_once.attempts, failed_once.last_status_code) == (1, None)
    assert failed_once.last_error == "connection refused"
    assert failed_once.next_attempt_at is not None
    assert 4.0 <= failed_once.next_attempt_at - world.clock() <= 6.0

    world.clock.advance(3.0)
    assert await world.send_due() == []  # not due yet

    world.clock.now = failed_once.next_attempt_at
    await world.send_due()
    failed_twice = world.delivery(sent)
    assert failed_twice.attempts == 2 and failed_twice.next_attempt_at is not None
    assert 240.0 <= failed_twice.next_attempt_at - world.clock() <= 360.0


async def test_a_delivery_failing_for_three_days_is_given_up_as_failed(world: World) -> None:
    endpoint = world.add_endpoint(nobody_listening())
    sent = world.enqueue(endpoint)
    first_attempt = world.clock()

    await world.send_due()
    for _ in range(100):  # far more attempts than three days of the schedule hold
        delivery = world.delivery(sent)
        if delivery.status is not DeliveryStatus.PENDING:
            break
        assert delivery.next_attempt_at is not None
        world.clock.now = delivery.next_attempt_at
        assert len(await world.send_due()) == 1

    assert delivery.status is DeliveryStatus.FAILED and delivery.next_attempt_at is None
    attempts = world.log.attempts([sent])[sent]
    assert [a.number for a in attempts] == list(range(1, len(attempts) + 1))
    assert all(a.error == "connection refused" for a in attempts)
    tried_for = attempts[-1].at - first_attempt
    # The last retry (10 h ± 20 %) would have come after the three days.
    assert THREE_DAYS - 12 * 3600 <= tried_for <= THREE_DAYS
    assert world.enabled(endpoint)  # three days of failures: not yet five


async def test_an_endpoint_failing_for_five_days_is_disabled_by_the_system(
    world: World,
) -> None:
    endpoint = world.add_endpoint(nobody_listening())
    first = world.enqueue(endpoint)
    started = world.clock()
    await world.send_due()  # the run of failures begins

    world.clock.now = started + FIVE_DAYS - 3600
    second = world.enqueue(endpoint)
    await world.send_due()  # the first delivery's retry, given up (past its three days)
    assert world.delivery(first).status is DeliveryStatus.FAILED
    assert world.enabled(endpoint)  # an hour short of five days

    world.clock.now = started + FIVE_DAYS
    await world.send_due()  # the second delivery fails too: five days without a success
    assert world.delivery(second).attempts == 1
    assert not world.enabled(endpoint)
    disabled = world.stored(endpoint)[-1]
    assert (disabled.type, disabled.actor) == ("webhook.disabled", SYSTEM.name)
    assert "failing for 5 days" in disabled.data["reason"]

    world.clock.advance(3600)
    await world.send_due()  # the second delivery's retry: the endpoint is off
    after = world.delivery(second)
    assert after.status is DeliveryStatus.FAILED and after.last_error == "endpoint disabled"
    assert [e.type for e in world.stored(endpoint)].count("webhook.disabled") == 1


async def test_a_success_in_between_ends_the_failing_run(world: World, receiver: Receiver) -> None:
    endpoint = world.add_endpoint(receiver.url)
    started = world.clock()
    receiver.statuses.append(503)
    first = world.enqueue(endpoint)
    await world.send_due()
    assert world.log.failing_since(endpoint.endpoint.id) == started

    world.clock.advance(DAY)
    await world.send_due()  # its retry succeeds
    assert world.delivery(first).status is DeliveryStatus.SUCCEEDED
    assert world.log.failing_since(endpoint.endpoint.id) is None

    world.clock.now = started + FIVE_DAYS - DAY
    receiver.statuses.extend([503, 503])
    second = world.enqueue(endpoint)
    await world.send_due()  # failing again from here...
    world.clock.now = started + FIVE_DAYS + DAY
    await world.send_due()  # ...for two days, more than five since the first failure
    assert world.delivery(second).attempts == 2
    assert world.log.failing_since(endpoint.endpoint.id) == pytest.approx(started + FIVE_DAYS - DAY)
    assert world.enabled(endpoint)
    assert receiver.types() == ["api_key.created"] * 4


async def test_a_deleted_endpoints_delivery_fails_without_a_request(
    world: World, receiver: Receiver
) -> None:
    endpoint = world.add_endpoint(receiver.url)
    sent = world.enqueue(endpoint)
    world.hooks.delete(OPERATOR, endpoint.endpoint.id)

    assert len(await world.send_due()) == 1
    delivery = world.delivery(sent)
    assert delivery.status is DeliveryStatus.FAILED and delivery.next_attempt_at is None
    assert delivery.last_error == "endpoint deleted"
    assert receiver.received == []
    assert await world.send_due() == []  # and it is never tried again


async def test_a_delivery_claimed_by_a_killed_worker_is_sent_again_only_after_the_lease(
    world: World, receiver: Receiver
) -> None:
    endpoint = world.add_endpoint(receiver.url)
    sent = world.enqueue(endpoint)
    claimed_at = world.clock()
    (taken,) = world.log.claim_due(claimed_at, lease=LEASE, limit=10)  # then the worker died
    assert taken.id == sent

    world.clock.now = claimed_at + LEASE - 1
    async with dispatching(world.dispatcher):
        await asyncio.sleep(1.0)  # five idle rounds of the loop at least
        assert receiver.received == []
        world.clock.now = claimed_at + LEASE + 1
        world.dispatcher.wake()
        await receiver.wait_for(lambda r: len(r.received) >= 1, timeout=10, what="the retry")

    delivery = world.delivery(sent)
    assert delivery.status is DeliveryStatus.SUCCEEDED and delivery.attempts == 1
    (request,) = receiver.received
    assert request.headers["webhook-id"] == taken.msg_id
    Webhook(endpoint.secret).verify(request.body, request.headers)
