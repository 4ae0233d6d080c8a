"""The fan-out's own promises: a store error is never mistaken for "nothing to tell", a
key's rate limiting is told at most once an hour, across clock hours and restarts, and an
unused key's warning is told with when it goes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from eventsourcing.persistence import OperationalError

from adapters.key_events import to_message
from adapters.settings import Settings
from application.key_lifetimes import KeyLifetimes
from application.registry import KeyRegistry
from application.webhooks import Webhooks
from domain.actors import OPERATOR
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment, KeyType
from domain.lifetime_policy import LifetimePolicy
from domain.plans import Plan
from projections.webhook_deliveries import DeliveryLog
from projections.webhook_delivery_store import open_delivery_log
from workers.webhook_fanout import WebhookFanout

URL = "https://hooks.example.com/in"


@pytest.fixture
def log(settings: Settings) -> Iterator[DeliveryLog]:
    opened = open_delivery_log(settings)
    yield opened
    opened.close()


@pytest.fixture
def fanout(registry: KeyRegistry, log: DeliveryLog) -> WebhookFanout:
    return WebhookFanout(registry, Webhooks(registry, pepper=b"p" * 32), log)


def test_a_store_error_while_reading_the_key_is_raised_not_taken_for_nothing_to_tell(
    registry: KeyRegistry, fanout: WebhookFanout, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    fanout.webhooks.add(OPERATOR, org.id, url=URL, events=["api_key.revoked"])
    issued = registry.create_key(
        org.id, name="k", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    registry.revoke_key(issued.key.id, actor=OPERATOR)
    stored = registry.recorder.select_notifications(start=1, limit=100)
    position, notification = stored[-1].id, stored[-1]
    message = to_message(position, registry.mapper.to_domain_event(notification))
    assert message.type == "api_key.revoked"
    real_get = registry.repository.get

    def store_away(aggregate_id: object, *args: object, **kwargs: object) -> object:
        if aggregate_id == issued.key.id:  # the org and its endpoints read fine
            raise OperationalError("the store went away")
        return real_get(aggregate_id, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(registry.repository, "get", store_away)
    with pytest.raises(OperationalError):
        fanout.on_key_event(message)
    monkeypatch.setattr(registry.repository, "get", real_get)
    assert fanout.on_key_event(message) == 1  # the fetch, tried again, tells it


def test_rate_limiting_is_told_at_most_once_an_hour_even_across_a_clock_hour(
    registry: KeyRegistry, fanout: WebhookFanout, settings: Settings
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    fanout.webhooks.add(OPERATOR, org.id, url=URL, events=["rate_limit.exceeded"])
    key = registry.create_key(
        org.id, name="busy", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    ).key
    hour_end = (time.time() // 3600 + 1) * 3600
    org_text, key_text = format_org_id(org.id), format_key_id(key.id)
    assert datetime.fromtimestamp(hour_end - 1, UTC).minute == 59

    first = fanout.on_rate_limited(org_text, key_text, hour_end - 1, "req-1")
    again = fanout.on_rate_limited(org_text, key_text, hour_end + 1, "req-2")
    assert (first.enqueued, again.enqueued) == (1, 0)
    restarted = WebhookFanout(registry, fanout.webhooks, open_delivery_log(settings))
    assert restarted.on_rate_limited(org_text, key_text, hour_end + 60, "req-3").enqueued == 0
    later = restarted.on_rate_limited(org_text, key_text, hour_end + 3600, "req-4")
    assert later.enqueued == 1


class DiesBeforeRemembering:
    """The delivery log of a worker killed after enqueuing a 429's deliveries."""

    def __init__(self, log: DeliveryLog) -> None:
        self.log = log

    def __getattr__(self, name: str) -> object:
        return getattr(self.log, name)

    def set_told(self, key_id: object, at: float) -> None:
        raise SystemExit("killed")


def test_a_429_handed_over_again_after_a_crash_enqueues_nothing_twice(
    registry: KeyRegistry, fanout: WebhookFanout, log: DeliveryLog
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    hook = fanout.webhooks.add(OPERATOR, org.id, url=URL, events=["rate_limit.exceeded"])
    key = registry.create_key(
        org.id, name="busy", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    ).key
    args = (format_org_id(org.id), format_key_id(key.id), time.time(), "req-1")
    dying = WebhookFanout(registry, fanout.webhooks, DiesBeforeRemembering(log))  # type: ignore[arg-type]
    with pytest.raises(SystemExit):
        dying.on_rate_limited(*args)
    told = fanout.on_rate_limited(*args)  # the same 429, handed over again
    assert (told.enqueued, told.last_told) == (0, args[2])
    assert len(log.deliveries(hook.endpoint.id, limit=10)) == 1


def test_an_unused_keys_warning_is_told_as_api_key_unused_with_its_revocation_time(
    registry: KeyRegistry, fanout: WebhookFanout, log: DeliveryLog
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    endpoint = fanout.webhooks.add(OPERATOR, org.id, url=URL, events=["api_key.unused"]).endpoint
    issued = registry.create_key(
        org.id, name="k", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    KeyLifetimes(registry).set_policy(
        OPERATOR, org.id, LifetimePolicy(revoke_unused_after=timedelta(days=90))
    )
    registry.clock = lambda: datetime.now(UTC) + timedelta(days=85)
    revoke_at = KeyLifetimes(registry).warn_unused(issued.key.id, None)
    assert revoke_at is not None
    stored = registry.recorder.select_notifications(start=1, limit=100)
    message = to_message(stored[-1].id, registry.mapper.to_domain_event(stored[-1]))
    assert message.type == "api_key.unused_warning"

    assert fanout.on_key_event(message) == 1
    (delivery,) = log.deliveries(endpoint.id, limit=10)
    body = json.loads(delivery.payload)
    assert delivery.event_type == body["type"] == "api_key.unused"
    assert body["data"]["id"] == format_key_id(issued.key.id)
    assert body["data"]["unused_revocation_at"] == revoke_at.isoformat().replace("+00:00", "Z")
