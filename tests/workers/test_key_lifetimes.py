"""The lifetime sweep, on a clock the test moves: unused keys warned, then revoked as the
system; rolled keys revoked once idle; nothing revoked on a last use the audit may not know.

The last use comes from the real request-audit model, fed the request events the API would
publish.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from uuid import UUID

import msgspec
import nats
import pytest
from nats.js.api import ConsumerConfig

import workers.key_lifetimes
from adapters.request_events import (
    AUDIT_STREAM,
    REQUESTS_SUBJECT,
    RequestEvent,
    RequestEventBatch,
    ensure_audit_stream,
    new_event_id,
)
from adapters.settings import Settings
from application.history import History
from application.key_lifetimes import IDLE_REASON, KeyLifetimes
from application.registry import KeyRegistry
from bootstrap.lifetime_sweep import MAX_PENDING, AuditCurrency, run_lifetimes
from bootstrap.workers import WORKERS
from domain.actors import OPERATOR
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment, KeyType
from domain.lifetime_policy import UNUSED_REASON, LifetimePolicy
from domain.plans import Plan
from projections.generation_store import open_generation_store
from projections.request_audit_query import Message, RequestAuditStore
from projections.request_audit_store import open_request_audit_store
from support.servers import NatsServer
from workers.key_lifetimes import LifetimeSweep, SweepReport

DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def audit(settings: Settings) -> Iterator[RequestAuditStore]:
    opened = open_request_audit_store(settings)
    yield opened
    opened.close()


@pytest.fixture
def clock(registry: KeyRegistry) -> Clock:
    moving = Clock(datetime.now(UTC))
    registry.clock = moving
    return moving


_seq = count(1)


def use(audit: RequestAuditStore, registry: KeyRegistry, key_id: UUID, at: datetime) -> None:
    """Record a request made with the key at `at`, as the audit worker would."""
    key = registry.get_key(key_id)
    event = RequestEvent(
        id=new_event_id(),
        request_id=new_event_id(),
        key_id=format_key_id(key_id),
        key_hint=key.hint,
        org_id=format_org_id(key.org_id),
        env=key.env.value,
        method="GET",
        route="/v1/affiliates",
        path="/v1/affiliates",
        status=200,
        client_addr="203.0.113.9",
        user_agent="svc/1.0",
        latency_ms=1.0,
        occurred_at=at.timestamp(),
    )
    audit.ingest([Message(next(_seq), msgspec.json.encode(RequestEventBatch(events=[event])))])


def a_key(registry: KeyRegistry, policy: LifetimePolicy | None = None) -> UUID:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    if policy is not None:
        KeyLifetimes(registry).set_policy(OPERATOR, org.id, policy)
    return registry.create_key(
        org.id, name="backend", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    ).key.id


class Sweep:
    """The sweep as its worker runs it, on the real audit model; the audit current unless said."""

    def __init__(self, registry: KeyRegistry, audit: RequestAuditStore) -> None:
        self.sweep = LifetimeSweep(registry, audit.last_used)

    def run_once(self, *, audit_current: bool = True) -> SweepReport:
        return self.sweep.run_once(audit_current=audit_current)


def sweep(registry: KeyRegistry, audit: RequestAuditStore) -> Sweep:
    return Sweep(registry, audit)


def events_of(registry: KeyRegistry, key_id: UUID) -> list[dict]:  # type: ignore[type-arg]
    return History(registry, OPERATOR).key_history(key_id)


UNUSED_90 = LifetimePolicy(revoke_unused_after=90 * DAY)


def test_an_unused_key_is_warned_a_week_ahead_then_revoked_by_the_system(
    registry: KeyRegistry, audit: RequestAuditStore, clock: Clock
) -> None:
    key_id = a_key(registry, UNUSED_90)
    sweeping = sweep(registry, audit)
    assert sweeping.run_once().warned == 0

    clock.now += 84 * DAY
    report = sweeping.run_once()
    assert report.warned == 1 and report.revoked_unused == 0
    warning = registry.get_key(key_id).unused_warning
    assert warning is not None and warning.revoke_at >= clock.now + 6 * DAY
    assert sweeping.run_once().warned == 0, "a key is warned once"

    clock.now = warning.revoke_at
    assert sweeping.run_once().revoked_unused == 1
    key = registry.get_key(key_id)
    assert key.is_revoked and key.revocation_reason == UNUSED_REASON
    assert key.revoked_by == "system"
    types = [e["type"] for e in events_of(registry, key_id)]
    assert types[-2:] == ["api_key.unused_warning", "api_key.revoked"]


def test_a_key_used_after_its_warning_is_kept(
    registry: KeyRegistry, audit: RequestAuditStore, clock: Clock
) -> None:
    key_id = a_key(registry, UNUSED_90)
    sweeping = sweep(registry, audit)
    clock.now += 85 * DAY
    assert sweeping.run_once().warned == 1
    use(audit, registry, key_id, clock.now + DAY)

    clock.now += 10 * DAY
    report = sweeping.run_once()
    assert report.revoked_unused == 0 and report.warned == 0
    assert not registry.get_key(key_id).is_revoked


def test_a_key_in_use_is_never_warned(
    registry: KeyRegistry, audit: RequestAuditStore, clock: Clock
) -> None:
    key_id = a_key(registry, UNUSED_90)
    clock.now += 200 * DAY
    use(audit, registry, key_id, clock.now - DAY)
    assert sweep(registry, audit).run_once().warned == 0


def test_keys_of_an_org_without_the_rule_are_left_alone(
    registry: KeyRegistry, audit: RequestAuditStore, clock: Clock
) -> None:
    key_id = a_key(registry)
    clock.now += 1000 * DAY
    report = sweep(registry, audit).run_once()
    assert report.warned == 0 and report.revoked_unused == 0
    assert registry.get_key(key_id).unused_warning is None


def test_nothing_is_warned_or_revoked_while_the_audit_is_not_current(
    registry: KeyRegistry, audit: RequestAuditStore, clock: Clock
) -> None:
    key_id = a_key(registry, UNUSED_90)
    clock.now += 85 * DAY
    held = sweep(registry, audit).run_once(audit_current=False)
    assert held.warned == 0 and held.held_back == 1
    assert sweep(registry, audit).run_once().warned == 1
    clock.now += 8 * DAY
    report = sweep(registry, audit).run_once(audit_current=False)
    assert report.revoked_unused == 0 and report.held_back == 1
    assert not registry.get_key(key_id).is_revoked


def test_nothing_is_warned_or_revoked_when_the_last_use_cannot_be_read(
    registry: KeyRegistry, audit: RequestAuditStore, clock: Clock
) -> None:
    key_id = a_key(registry, UNUSED_90)
    clock.now += 85 * DAY

    def unreadable(key_ids: list[UUID]) -> dict[UUID, object]:
        raise ConnectionError("the audit model is away")

    blind = LifetimeSweep(registry, unreadable)  # type: ignore[arg-type]
    assert blind.run_once(audit_current=True).warned == 0
    sweep(registry, audit).run_once()
    clock.now += 8 * DAY
    report = blind.run_once(audit_current=True)
    assert report.revoked_unused == 0 and report.held_back == 1
    assert not registry.get_key(key_id).is_revoked


def test_a_warning_given_before_the_rule_was_set_again_does_not_revoke(
    registry: KeyRegistry, audit: RequestAuditStore, clock: Clock
) -> None:
    key_id = a_key(registry, UNUSED_90)
    org_id = registry.get_key(key_id).org_id
    lifetimes = KeyLifetimes(registry)
    clock.now += 85 * DAY
    assert sweep(registry, audit).run_once().warned == 1
    lifetimes.set_policy(OPERATOR, org_id, LifetimePolicy())
    lifetimes.set_policy(OPERATOR, org_id, UNUSED_90)

    clock.now += 60 * DAY
    report = sweep(registry, audit).run_once()
    assert report.revoked_unused == 0 and report.warned == 1, "warned anew, not revoked"
    assert not registry.get_key(key_id).is_revoked


def test_a_rolled_key_is_revoked_once_idle_and_its_successor_lives_on(
    registry: KeyRegistry, audit: RequestAuditStore, clock: Clock
) -> None:
    key_id = a_key(registry)
    successor = registry.roll_key(
        key_id, grace=DAY, actor=OPERATOR, revoke_when_idle=15 * MINUTE
    ).key
    sweeping = sweep(registry, audit)
    clock.now += 10 * MINUTE
    use(audit, registry, key_id, clock.now)
    clock.now += 14 * MINUTE
    assert sweeping.run_once().revoked_idle == 0, "used 14 minutes ago: still in use"

    clock.now += 2 * MINUTE
    assert sweeping.run_once().revoked_idle == 1
    old = registry.get_key(key_id)
    assert old.is_revoked and old.revocation_reason == IDLE_REASON and old.revoked_by == "system"
    assert not registry.get_key(successor.id).is_revoked


def test_a_rolled_key_without_the_arrangement_waits_for_its_grace(
    registry: KeyRegistry, audit: RequestAuditStore, clock: Clock
) -> None:
    key_id = a_key(registry)
    registry.roll_key(key_id, grace=DAY, actor=OPERATOR)
    clock.now += 12 * 60 * MINUTE
    assert sweep(registry, audit).run_once().revoked_idle == 0
    assert not registry.get_key(key_id).is_revoked


def test_an_idle_key_is_not_revoked_while_the_audit_is_not_current(
    registry: KeyRegistry, audit: RequestAuditStore, clock: Clock
) -> None:
    key_id = a_key(registry)
    registry.roll_key(key_id, grace=DAY, actor=OPERATOR, revoke_when_idle=15 * MINUTE)
    clock.now += 30 * MINUTE
    report = sweep(registry, audit).run_once(audit_current=False)
    assert report.revoked_idle == 0 and report.held_back == 1
    assert not registry.get_key(key_id).is_revoked


def test_a_new_sweep_reads_the_warnings_and_arrangements_from_the_store(
    registry: KeyRegistry, audit: RequestAuditStore, clock: Clock
) -> None:
    key_id = a_key(registry, UNUSED_90)
    clock.now += 85 * DAY
    assert sweep(registry, audit).run_once().warned == 1
    restarted = sweep(registry, audit)
    assert restarted.run_once().warned == 0
    clock.now += 8 * DAY
    assert restarted.run_once().revoked_unused == 1
    assert registry.get_key(key_id).is_revoked


def test_the_lifetimes_worker_is_registered() -> None:
    assert WORKERS["lifetimes"] is run_lifetimes


async def test_the_audit_is_current_only_with_a_live_audit_worker_caught_up(
    settings: Settings, private_nats: NatsServer
) -> None:
    pointers = open_generation_store(settings)
    client = await nats.connect(private_nats.url)
    try:
        js = client.jetstream()
        await ensure_audit_stream(js)
        current = AuditCurrency(pointers, js)
        assert not await current(), "no audit worker has a heartbeat"
        pointers.beat("test:1", {"audit": "running"}, datetime.now(UTC))
        assert not await current(), "its consumer does not exist yet"
        await js.add_consumer(AUDIT_STREAM, ConsumerConfig(durable_name="icodrip-audit"))
        assert await current()
        for _ in range(MAX_PENDING + 1):
            await js.publish(REQUESTS_SUBJECT + ".live", b"{}")
        assert not await current(), "a backlog to ingest first"
        assert not await AuditCurrency(pointers, None)(), "no NATS: not known to be current"
    finally:
        await client.close()
        pointers.close()


def test_a_pass_warns_a_bounded_number_of_keys_and_the_next_the_rest(
    registry: KeyRegistry,
    audit: RequestAuditStore,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(workers.key_lifetimes, "UNUSED_ACTIONS_PER_PASS", 2)
    org_id = registry.get_key(a_key(registry, UNUSED_90)).org_id
    for n in range(2):
        registry.create_key(
            org_id, name=f"k{n}", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
        )
    clock.now += 85 * DAY
    sweeping = sweep(registry, audit)
    assert sweeping.run_once().warned == 2
    assert sweeping.run_once().warned == 1
