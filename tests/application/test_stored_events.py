"""The key store's mapper reads an expiry stored before `ApiKey.Expired` as an expiry.

Runs on both stores (the `store` fixture): what is stored is never rewritten, only read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from application.registry import KeyRegistry
from domain.actors import OPERATOR
from domain.api_key import ApiKey
from domain.key_format import Environment, KeyType
from domain.key_states import EXPIRED_AT_EXPIRY, ExpiryCause, KeyStatus
from domain.plans import Plan

if TYPE_CHECKING:
    from conftest import Store  # tests/application/conftest.py

NOW = datetime.now(UTC)


def a_key(registry: KeyRegistry, expires_at: datetime | None = None) -> UUID:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    issued = registry.create_key(
        org.id,
        name="backend",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
        expires_at=expires_at,
    )
    return issued.key.id


def last_stored(registry: KeyRegistry, key_id: UUID) -> tuple[str, dict[str, object]]:
    stored = registry.recorder.select_events(key_id)[-1]
    return stored.topic, json.loads(stored.state)


def store_old_style_expiry(registry: KeyRegistry, key_id: UUID) -> None:
    """What the expiry worker stored before `ApiKey.Expired`: the system's revocation."""
    key = registry.get_key(key_id)
    key.trigger_event(ApiKey.Revoked, reason=EXPIRED_AT_EXPIRY, org_id=key.org_id, actor="system")
    registry.save(key)


def test_an_old_style_expiry_is_read_as_an_expired_event(store: Store) -> None:
    key_id = a_key(store.open())
    store_old_style_expiry(store.open(), key_id)

    registry = store.open()
    event = registry.mapper.to_domain_event(registry.recorder.select_events(key_id)[-1])

    assert isinstance(event, ApiKey.Expired) and event.cause == ExpiryCause.AT_EXPIRY


def test_a_key_with_an_old_style_expiry_loads_expired_and_its_store_is_not_rewritten(
    store: Store,
) -> None:
    key_id = a_key(store.open())
    store_old_style_expiry(store.open(), key_id)

    registry = store.open()
    key = registry.get_key(key_id)

    assert (key.status_at(NOW), key.expiry_cause) == (KeyStatus.EXPIRED, ExpiryCause.AT_EXPIRY)
    assert last_stored(registry, key_id)[0] == "domain.api_key:ApiKey.Revoked"


def test_a_persons_revocation_in_an_expirys_words_still_reads_as_a_revocation(
    store: Store,
) -> None:
    key_id = a_key(store.open())
    store.open().revoke_key(key_id, actor=OPERATOR, reason=EXPIRED_AT_EXPIRY)

    key = store.open().get_key(key_id)

    assert (key.status_at(NOW), key.expiry_cause) == (KeyStatus.REVOKED, None)


def test_a_new_expiry_is_stored_as_an_expired_event_of_version_2(store: Store) -> None:
    key_id = a_key(store.open(), expires_at=NOW + timedelta(hours=1))
    later = store.open(clock=lambda: NOW + timedelta(hours=2))

    assert later.expire_key(key_id)

    topic, state = last_stored(later, key_id)
    assert topic == "domain.api_key:ApiKey.Expired"
    assert (state["class_version"], state["cause"], state["actor"]) == (2, "at_expiry", "system")
    assert "reason" not in state
