"""KeyManagement: what `/v1/api-keys` and the dashboard share — keys with their last use,
orders read from names, and changes made as an actor the access policy judges."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from uuid import UUID

import pytest

from application.key_management import (
    KeyManagement,
    KeyOrder,
    KeyUse,
    expiry_after,
    key_ref,
)
from application.registry import KeyRegistry
from domain.actors import OPERATOR
from domain.errors import NotFound, ValidationError
from domain.key_format import Environment, KeyType
from domain.plans import Permission, Plan
from domain.user import NotAllowed, Role
from support.actors import key_actor, user_of


class Use(NamedTuple):
    at: float
    addr: str | None


class Reader:
    """A last-use reader that remembers what it was asked."""

    def __init__(self, known: Mapping[UUID, KeyUse]) -> None:
        self.known = known
        self.asked: list[list[UUID]] = []

    def __call__(self, key_ids: list[UUID]) -> Mapping[UUID, KeyUse]:
        self.asked.append(list(key_ids))
        return {k: self.known[k] for k in key_ids if k in self.known}


def _order(name: str, env: str = "live") -> KeyOrder:
    return KeyOrder.asked(name, env)


def test_an_org_lists_the_keys_its_actor_sees_oldest_first_with_their_last_use(
    registry: KeyRegistry,
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    management = KeyManagement(registry)
    live = management.create(OPERATOR, org.id, _order("Live")).record.key
    test = management.create(OPERATOR, org.id, _order("Test", "test")).record.key
    used = Use(1_780_000_000.5, "203.0.113.9")
    reader = Reader({live.id: used})
    management = KeyManagement(registry, reader)

    listing = management.org_keys(user_of(org), org.id)
    assert listing.org.id == org.id
    assert [r.key.name for r in listing.keys] == ["Live", "Test"]
    assert [r.last_use for r in listing.keys] == [used, None]
    assert listing.keys[0].last_used_at == datetime.fromtimestamp(used.at, UTC)
    assert reader.asked == [[live.id, test.id]]  # one question for the whole listing

    # Test mode sees test mode only; a listing without last use asks nothing.
    test_key = registry.get_key(test.id)
    as_test_key = key_actor(test_key, registry.get_organization(org.id))
    quiet = management.org_keys(as_test_key, org.id, with_use=False)
    assert [r.key.name for r in quiet.keys] == ["Test"] and quiet.keys[0].last_use is None
    assert len(reader.asked) == 1


def test_a_key_is_read_only_by_its_organization_and_a_bad_id_names_no_key(
    registry: KeyRegistry,
) -> None:
    ours = registry.register_organization("Ours", Plan.PRO, OPERATOR)
    theirs = registry.register_organization("Theirs", Plan.PRO, OPERATOR)
    management = KeyManagement(registry)
    key = management.create(OPERATOR, theirs.id, _order("Theirs")).record.key

    with pytest.raises(NotFound):
        management.key(user_of(ours), key.id)
    record = management.key(user_of(theirs), key_ref(f"key_{key.id.hex}"))
    assert record.key.id == key.id and record.org.id == theirs.id
    with pytest.raises(NotFound, match="no such API key"):
        key_ref("key_not-hex")


def test_an_order_reads_names_and_refuses_unknown_ones() -> None:
    order = KeyOrder.asked("Billing", "test", permissions=["affiliates:read"])
    assert order.env is Environment.TEST and order.key_type is KeyType.SECRET
    assert order.permissions == frozenset({Permission.AFFILIATES_READ})
    assert KeyOrder.asked("Billing", "live").permissions is None  # not restricted
    with pytest.raises(ValidationError, match="unknown permission"):
        KeyOrder.asked("Billing", "live", permissions=["everything"])
    with pytest.raises(ValueError):
        KeyOrder.asked("Billing", "production")
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert expiry_after(0, now) is None and expiry_after(7, now) == now + timedelta(days=7)


def test_changes_are_judged_by_the_policy_for_the_actor_who_asks(registry: KeyRegistry) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    management = KeyManagement(registry, Reader({}))
    admins = management.create(user_of(org), org.id, _order("Admin's"))
    developer = user_of(org, Role.DEVELOPER)
    mine = management.create(developer, org.id, _order("Mine"))

    assert mine.secret.startswith("ak_live_") and mine.record.last_use is None
    assert Permission.API_KEYS_WRITE not in (mine.record.key.permissions or frozenset())
    with pytest.raises(NotAllowed, match="roll the API keys they created"):
        management.roll(developer, admins.record.key.id, grace=timedelta(hours=1))

    rolled = management.roll(developer, mine.record.key.id, grace=timedelta(hours=1))
    assert rolled.record.key.predecessor_id == mine.record.key.id
    assert management.rename(developer, rolled.record.key.id, name="Mine too").name == "Mine too"
    revoked = management.revoke(developer, mine.record.key.id, reason="rolled")
    assert revoked.is_revoked and revoked.revocation_reason == "rolled"
    assert management.with_last_use(rolled.record).last_use is None
