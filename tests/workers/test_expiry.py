"""The expiry worker revokes keys whose time is up, as the system, once, even when raced."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from adapters.settings import Settings
from application.history import History
from application.registry import KeyRegistry
from application.stores import open_registry
from bootstrap.workers import WORKERS, run_expiry
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.key_states import EXPIRED_AFTER_GRACE, EXPIRED_AT_EXPIRY, KeyStatus
from domain.plans import Plan
from projections.key_lookup_updater import KeyLookupUpdater
from projections.live_key_lookup import open_key_lookup_view
from workers.expiry import ExpiryWorker


def a_key(registry: KeyRegistry, expires_at: datetime | None = None):  # type: ignore[no-untyped-def]
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    return registry.create_key(
        org.id,
        name="backend",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
        expires_at=expires_at,
    ).key


def revocations(registry: KeyRegistry, key_id) -> list[dict]:  # type: ignore[no-untyped-def]
    history = History(registry, OPERATOR).key_history(key_id)
    return [e for e in history if e["type"] == "api_key.revoked"]


async def wait_until_revoked(registry: KeyRegistry, key_id, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not registry.get_key(key_id).is_revoked:
        assert time.monotonic() < deadline, "the worker did not revoke the key in time"
        await asyncio.sleep(0.05)


def test_the_expiry_worker_is_registered() -> None:
    assert WORKERS["expiry"] is run_expiry


async def test_the_worker_revokes_a_rolled_key_at_the_end_of_its_grace(
    registry: KeyRegistry, settings: Settings
) -> None:
    key = a_key(registry)
    registry.roll_key(key.id, grace=timedelta(0), actor=OPERATOR)
    stopping = asyncio.Event()
    task = asyncio.create_task(run_expiry(settings, stopping))
    try:
        await wait_until_revoked(registry, key.id)
    finally:
        stopping.set()
        await task
    (event,) = revocations(registry, key.id)
    assert (event["actor"], event["data"]["reason"]) == ("system", EXPIRED_AFTER_GRACE)


async def test_the_worker_revokes_an_expiring_key_at_its_expiry_time(
    registry: KeyRegistry, settings: Settings
) -> None:
    expires_at = datetime.now(UTC) + timedelta(seconds=1)
    key = a_key(registry, expires_at)
    stopping = asyncio.Event()
    task = asyncio.create_task(run_expiry(settings, stopping))
    try:
        await asyncio.sleep(0.5)
        assert not registry.get_key(key.id).is_revoked  # not before its time
        await wait_until_revoked(registry, key.id)
    finally:
        stopping.set()
        await task
    revoked = registry.get_key(key.id)
    assert revoked.revoked_at is not None and revoked.revoked_at >= expires_at
    assert revoked.revoked_by == "system"
    assert revoked.revocation_reason == EXPIRED_AT_EXPIRY
    assert revoked.status_at(datetime.now(UTC)) == KeyStatus.EXPIRED


def test_a_key_without_expiry_is_left_alone(registry: KeyRegistry) -> None:
    key = a_key(registry)
    assert ExpiryWorker(registry).run_once() == 0
    assert not registry.get_key(key.id).is_revoked


def test_a_second_pass_revokes_nothing_more(registry: KeyRegistry) -> None:
    key = a_key(registry)
    registry.roll_key(key.id, grace=timedelta(0), actor=OPERATOR)
    worker = ExpiryWorker(registry)
    assert worker.run_once() == 1
    assert worker.run_once() == 0
    assert len(revocations(registry, key.id)) == 1


def test_two_workers_racing_revoke_each_key_once(registry: KeyRegistry, settings: Settings) -> None:
    keys = [a_key(registry) for _ in range(5)]
    for key in keys:
        registry.roll_key(key.id, grace=timedelta(0), actor=OPERATOR)
    other = open_registry(dataclasses.replace(settings))
    try:
        workers = [ExpiryWorker(registry), ExpiryWorker(other)]
        with ThreadPoolExecutor(2) as pool:
            counts = list(pool.map(lambda w: w.run_once(), workers))
    finally:
        other.close()
    assert sum(counts) == 5
    for key in keys:
        assert len(revocations(registry, key.id)) == 1


def test_the_worker_starts_from_the_key_lookup_view_not_the_whole_log(
    registry: KeyRegistry, settings: Settings
) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    expiring, lasting = a_key(registry, soon), a_key(registry)
    revoked = a_key(registry, soon)
    registry.revoke_key(revoked.id, actor=OPERATOR)
    view = open_key_lookup_view(settings)
    KeyLookupUpdater.from_view(registry, view).catch_up_fully()
    later = a_key(registry)  # after the view's position: read from the log
    registry.roll_key(later.id, grace=timedelta(0), actor=OPERATOR)

    worker = ExpiryWorker(registry, view)
    read = worker.catch_up()

    assert set(worker.index.expiries) == {expiring.id, later.id}
    assert lasting.id not in worker.index.expiries
    assert read == registry.recorder.max_notification_id() - view.max_tracking_id(registry.name)
    assert worker.run_once() == 1 and registry.get_key(later.id).is_revoked
