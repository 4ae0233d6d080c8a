"""The key-lookup model answers who a key is, durably, and rebuilds to the same state."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from adapters.settings import Settings
from application.registry import KeyRegistry
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType, hash_key
from domain.plans import Plan
from projections.key_lookup import KeyLookup
from projections.key_lookup_updater import KeyLookupUpdater
from projections.live_key_lookup import open_key_lookup_view


def snapshot(lookup: KeyLookup) -> tuple[dict, dict]:
    return (
        {
            h: (r.key_id, r.org_id, r.env, r.type, r.revoked, r.expires_at, r.name)
            for r in lookup.records()
            if (h := r.key_hash) is not None
        },
        {r.org_id: (r.plan, r.rate_limit) for r in lookup.org_records()},
    )


def test_a_created_key_is_found_by_its_hash_with_its_orgs_permissions(
    registry: KeyRegistry, settings: Settings
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    issued = registry.create_key(
        org.id, name="Backend", env=Environment.TEST, key_type=KeyType.SECRET, actor=OPERATOR
    )
    updater = KeyLookupUpdater.from_view(registry, open_key_lookup_view(settings))
    updater.catch_up_fully()

    record = updater.lookup.get(hash_key(issued.secret, settings.key_pepper))
    assert record is not None
    principal = updater.lookup.principal(record)
    assert principal.key_id == issued.key.id and principal.env == "test"
    assert "audit:read" in principal.permissions and principal.rate_limit == 100


def test_revocation_roll_and_plan_change_reach_the_durable_view(
    registry: KeyRegistry, settings: Settings
) -> None:
    org = registry.register_organization("Acme", Plan.AGENCY, OPERATOR)
    issued = registry.create_key(
        org.id, name="Backend", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    view = open_key_lookup_view(settings)
    KeyLookupUpdater.from_view(registry, view).catch_up_fully()
    registry.roll_key(issued.key.id, grace=timedelta(hours=1), actor=OPERATOR)
    registry.revoke_key(issued.key.id, actor=OPERATOR)
    registry.set_rate_limit(org.id, 7000, OPERATOR)
    KeyLookupUpdater.from_view(registry, view).catch_up_fully()

    found = view.find(hash_key(issued.secret, settings.key_pepper))
    assert found is not None
    key, org_record = found
    assert key.revoked and key.expires_at is not None
    assert org_record is not None and org_record.rate_limit == 7000
    assert view.count() == 2


def test_a_rebuild_from_zero_reaches_the_same_state_as_the_live_view(
    registry: KeyRegistry, settings: Settings
) -> None:
    org = registry.register_organization("Acme", Plan.FREE, OPERATOR)
    for i in range(5):
        issued = registry.create_key(
            org.id, name=f"k{i}", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
        )
        if i % 2:
            registry.revoke_key(issued.key.id, actor=OPERATOR)
    live = KeyLookupUpdater.from_view(registry, open_key_lookup_view(settings))
    live.catch_up(batch_size=3)  # built in small steps...
    live.catch_up_fully()
    fresh = KeyLookupUpdater.from_view(registry, open_key_lookup_view(settings, "KeyLookupRebuild"))
    fresh.catch_up_fully()  # ...and in one go, into a copy beside it

    reloaded = open_key_lookup_view(settings).load(registry.name)
    assert snapshot(reloaded) == snapshot(fresh.lookup) == snapshot(live.lookup)
    assert reloaded.position == live.lookup.position


def test_the_view_never_holds_a_plaintext_key(registry: KeyRegistry, settings: Settings) -> None:
    org = registry.register_organization("Acme", Plan.FREE, OPERATOR)
    issued = registry.create_key(
        org.id, name="k", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    view = open_key_lookup_view(settings)
    KeyLookupUpdater.from_view(registry, view).catch_up_fully()
    rows = view.load(registry.name)
    assert all(issued.secret not in repr(r) for r in rows.records())


class FlakyView:
    """The durable view, failing its next write and load while `down` (a store outage)."""

    def __init__(self, view: Any) -> None:
        self.view, self.down = view, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.view, name)

    def write(self, changes: Any, tracking: Any) -> None:
        if self.down:
            raise OSError("the store is down")
        self.view.write(changes, tracking)

    def load(self, application_name: str, into: Any = None) -> Any:
        if self.down:
            raise OSError("the store is down")
        return self.view.load(application_name, into)


def test_a_failed_write_during_an_outage_loses_no_change_once_the_store_is_back(
    registry: KeyRegistry, settings: Settings
) -> None:
    org = registry.register_organization("Acme", Plan.FREE, OPERATOR)
    view = FlakyView(open_key_lookup_view(settings))
    updater = KeyLookupUpdater.from_view(registry, view)
    updater.catch_up_fully()
    issued = registry.create_key(
        org.id,
        name="made while down",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
    )

    view.down = True
    with pytest.raises(OSError):
        updater.catch_up()  # applied in memory, not written, and the view cannot be reloaded
    view.down = False
    later = registry.create_key(
        org.id, name="made after", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    updater.catch_up_fully()

    for secret in (issued.secret, later.secret):
        assert view.find(hash_key(secret, settings.key_pepper)) is not None
