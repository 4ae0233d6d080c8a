"""`rate_limit.exceeded` on real NATS and a real receiver: a key's first 429 is told once,
with the key object, to the endpoints of the key's environment; further 429s of that key
within the hour, and 429s over an hour old, are not.

Request events go on the request stream (`ICODRIP_AUDIT`) as the API publishes them; the
webhook worker reads them on its own durable consumer. The stream is read in order, so once a
later event of another key has arrived, anything the earlier ones caused has been enqueued,
and (one delivery in flight per endpoint, in the order of the events) sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from adapters.request_events import RequestEvent
from adapters.settings import Settings
from application.registry import KeyRegistry
from application.stores import open_registry
from application.views import api_key_view, iso
from application.webhooks import EndpointWithSecret, Webhooks
from bootstrap.webhooks import webhooks_for
from bootstrap.workers import run_workers
from domain.actors import OPERATOR
from domain.api_key import ApiKey
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Plan
from support.audit_events import publish
from support.request_events import request_event
from support.servers import NatsServer
from support.webhook_receiver import Receiver, webhook_receiver

HOUR = 3600.0


@dataclass
class Org:
    registry: KeyRegistry
    hooks: Webhooks
    org: Organization

    def key(self, env: Environment = Environment.LIVE) -> ApiKey:
        created = self.registry.create_key(
            self.org.id, name="busy", env=env, key_type=KeyType.SECRET, actor=OPERATOR
        )
        return created.key

    def endpoint(self, url: str, env: Environment = Environment.LIVE) -> EndpointWithSecret:
        return self.hooks.add(
            OPERATOR, self.org.id, url=url, events=["rate_limit.exceeded"], env=env
        )


@contextlib.contextmanager
def hours_ago(hours: float) -> Iterator[None]:
    """What is added in the block is dated `hours` ago (an event from before an endpoint was
    added is never sent to it, so a test of old 429s needs an older endpoint)."""
    then = datetime.now(UTC) - timedelta(hours=hours)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("eventsourcing.domain.datetime_now_with_tzinfo", lambda: then)
        yield


@pytest.fixture
def worker_settings(
    store_env: dict[str, str], private_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.setenv("ICODRIP_WEBHOOKS_RETRY_SCALE", "0.001")
    return Settings.from_env(
        {**store_env, "ICODRIP_NATS_URL": private_nats.url, "ICODRIP_WEBHOOKS_ALLOW_PRIVATE": "1"}
    )


@pytest.fixture
def acme(worker_settings: Settings) -> Iterator[Org]:
    registry = open_registry(worker_settings)
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    yield Org(registry, webhooks_for(registry, worker_settings), org)
    registry.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as listening:
        yield listening


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[None]:
    """The webhook worker, until the block ends."""
    stopping = asyncio.Event()
    task = asyncio.create_task(
        run_workers(settings, ["webhooks"], stopping=stopping, handle_signals=False)
    )
    try:
        yield
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)


def too_many(key: ApiKey, at: float | None = None) -> RequestEvent:
    """A request of `key` answered 429 at `at` (now by default)."""
    event: RequestEvent = request_event(
        key_id=format_key_id(key.id),
        org_id=format_org_id(key.org_id),
        env=key.env.value,
        status=429,
        occurred_at=time.time() if at is None else at,
    )
    return event


async def refused(settings: Settings, *events: RequestEvent) -> None:
    """Put the events on the request stream, one message each, in this order."""
    assert settings.nats_url
    await publish(settings.nats_url, [[event] for event in events])


def key_ids(receiver: Receiver) -> list[str]:
    found = []
    for item in receiver.received:
        data = item.event["data"]
        assert isinstance(data, dict)
        found.append(str(data["id"]))
    return found


async def test_a_keys_429s_in_one_hour_are_told_once_and_another_keys_429_on_its_own(
    worker_settings: Settings, acme: Org, receiver: Receiver
) -> None:
    with hours_ago(3):
        added = acme.endpoint(receiver.url)
        busy, other = acme.key(), acme.key()
    now = time.time()
    first_at = max(now // HOUR * HOUR, now - HOUR / 2)  # this hour's, up to half an hour ago
    async with running(worker_settings):
        await refused(worker_settings, too_many(busy, first_at))
        await receiver.wait_for(lambda r: len(r.received) >= 1, what="the first 429")

        # Fifty more between the first and now: the same clock hour.
        same_hour = [first_at + (now - first_at) * i / 50 for i in range(1, 51)]
        await refused(worker_settings, *(too_many(busy, at) for at in same_hour))
        await refused(worker_settings, too_many(other))
        await receiver.wait_for(lambda r: len(r.received) >= 2, what="the other key's 429")
        await asyncio.sleep(0.5)  # anything sent twice would arrive by now

    assert receiver.types() == ["rate_limit.exceeded"] * 2
    assert key_ids(receiver) == [format_key_id(busy.id), format_key_id(other.id)]
    hook = Webhook(added.secret)
    for item in receiver.received:
        hook.verify(item.body, item.headers)
    told = receiver.received[0].event
    occurred = datetime.fromtimestamp(first_at, UTC)
    assert told["timestamp"] == iso(occurred)
    assert told["data"] == api_key_view(acme.registry.get_key(busy.id), acme.org, occurred)


async def test_a_restarted_worker_does_not_tell_the_same_keys_hour_again(
    worker_settings: Settings, acme: Org, receiver: Receiver
) -> None:
    acme.endpoint(receiver.url)
    busy, other = acme.key(), acme.key()
    first_at = time.time()
    async with running(worker_settings):
        await refused(worker_settings, too_many(busy, first_at))
        await receiver.wait_for(lambda r: len(r.received) >= 1, what="the first 429")
    async with running(worker_settings):
        await refused(worker_settings, too_many(busy, first_at + 0.001), too_many(other))
        await receiver.wait_for(lambda r: len(r.received) >= 2, what="the other key's 429")
        await asyncio.sleep(0.5)
    assert key_ids(receiver) == [format_key_id(busy.id), format_key_id(other.id)]


async def test_a_test_keys_429_reaches_only_the_test_endpoints(
    worker_settings: Settings, acme: Org
) -> None:
    with webhook_receiver() as live, webhook_receiver() as test:
        acme.endpoint(live.url, Environment.LIVE)
        acme.endpoint(test.url, Environment.TEST)
        test_key, live_key = acme.key(Environment.TEST), acme.key(Environment.LIVE)
        async with running(worker_settings):
            await refused(worker_settings, too_many(test_key), too_many(live_key))
            await test.wait_for(lambda r: len(r.received) >= 1, what="the test key's 429")
            await live.wait_for(lambda r: len(r.received) >= 1, what="the live key's 429")
            await asyncio.sleep(0.5)
    assert key_ids(test) == [format_key_id(test_key.id)]
    assert key_ids(live) == [format_key_id(live_key.id)]


async def test_a_429_over_an_hour_old_is_not_told(
    worker_settings: Settings, acme: Org, receiver: Receiver
) -> None:
    with hours_ago(3):  # endpoint and keys older than the old 429: only its age counts
        acme.endpoint(receiver.url)
        stale, fresh = acme.key(), acme.key()
    async with running(worker_settings):
        await refused(worker_settings, too_many(stale, time.time() - 2 * HOUR), too_many(fresh))
        await receiver.wait_for(lambda r: len(r.received) >= 1, what="the fresh 429")
        await asyncio.sleep(0.5)
    assert key_ids(receiver) == [format_key_id(fresh.id)]
