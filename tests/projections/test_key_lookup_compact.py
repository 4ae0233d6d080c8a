"""The API's packed mirror answers exactly as the worker's model of whole records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from math import floor
from uuid import uuid4

import pytest

from adapters.settings import Settings
from application.registry import KeyRegistry
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType, hash_key
from domain.plans import Permission, Plan
from projections.key_lookup import KeyLookup, KeyRecord
from projections.key_lookup_compact import CompactKeyLookup
from projections.key_lookup_updater import KeyLookupUpdater


def what_auth_sees(record: KeyRecord) -> tuple[object, ...]:
    """Every field authentication reads (the mirror keeps no names, and expiry to the ms)."""
    return (
        record.key_id,
        record.org_id,
        record.env,
        record.type,
        record.hint,
        record.permissions,
        record.allowed_origins,
        record.allowed_ips,
        record.revoked,
        record.expired,
        None if record.expires_at is None else floor(round(record.expires_at * 1000, 3)),
    )


def test_an_expiry_survives_any_number_of_unpack_and_pack_cycles() -> None:
    lookup = CompactKeyLookup()
    record = KeyRecord(
        key_id=uuid4(),
        org_id=uuid4(),
        key_hash="ab" * 32,
        env="live",
        type="secret",
        name="k",
        hint="ak_live_…AbC9",
        permissions=None,
        allowed_origins=(),
        expires_at=2_166_877_471.036_5,  # in 2038: binary floats are coarser there
    )
    lookup.add_key(record)
    for _ in range(50):  # every lifecycle event re-packs the key
        again = lookup.get_by_id(record.key_id)
        assert again is not None
        lookup.add_key(again)
    final = lookup.get(record.key_hash or "")
    assert final is not None and final.expires_at == 2_166_877_471.036
    assert final.hint == "ak_live_…AbC9"


def fold(registry: KeyRegistry, lookup: KeyLookup) -> KeyLookup:
    KeyLookupUpdater(registry, lookup, view=None).catch_up_fully()
    return lookup


@pytest.fixture
def secrets(registry: KeyRegistry) -> list[str]:
    """A store with every kind of key and every lifecycle change; the plaintext keys."""
    acme = registry.register_organization("Acme", Plan.AGENCY, OPERATOR)
    other = registry.register_organization("Other", Plan.FREE, OPERATOR)
    plain = registry.create_key(
        acme.id, name="plain", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    restricted = registry.create_key(
        acme.id,
        name="restricted",
        env=Environment.TEST,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
        permissions=frozenset({Permission.AFFILIATES_READ}),
        expires_at=datetime.now(UTC) + timedelta(days=3, microseconds=123_456),
        allowed_ips=("10.0.0.0/8", "2001:db8::/32"),
    )
    public = registry.create_key(
        acme.id,
        name="site",
        env=Environment.LIVE,
        key_type=KeyType.PUBLIC,
        actor=OPERATOR,
        allowed_origins=("https://shop.example",),
    )
    elsewhere = registry.create_key(
        other.id, name="other", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    agency = registry.register_organization("Agency", Plan.AGENCY, OPERATOR)
    registry.set_rate_limit(agency.id, 5000, OPERATOR)
    busy = registry.create_key(
        agency.id, name="busy", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    rolled = registry.roll_key(plain.key.id, grace=timedelta(hours=1), actor=OPERATOR)
    registry.rename_key(restricted.key.id, name="renamed", actor=OPERATOR)
    registry.change_key(elsewhere.key.id, allowed_ips=("192.0.2.0/24",), actor=OPERATOR)
    registry.revoke_key(public.key.id, actor=OPERATOR)
    registry.change_plan(acme.id, Plan.PRO, OPERATOR)
    return [k.secret for k in (plain, restricted, public, elsewhere, busy, rolled)]


def test_every_key_reads_the_same_by_hash_as_in_the_whole_record_model(
    registry: KeyRegistry, settings: Settings, secrets: list[str]
) -> None:
    whole, packed = fold(registry, KeyLookup()), fold(registry, CompactKeyLookup())
    pepper = settings.key_pepper
    for secret in secrets:
        expected, found = whole.get(hash_key(secret, pepper)), packed.get(hash_key(secret, pepper))
        assert expected is not None and found is not None
        assert what_auth_sees(found) == what_auth_sees(expected)
        assert packed.principal(found) == whole.principal(expected)
    assert len(packed) == len(whole) == len(secrets)
    assert sorted(map(repr, packed.org_records())) == sorted(map(repr, whole.org_records()))
    assert {o.rate_limit for o in packed.org_records()} == {100, 5000}


def test_every_key_reads_the_same_by_id_as_in_the_whole_record_model(
    registry: KeyRegistry, secrets: list[str]
) -> None:
    whole, packed = fold(registry, KeyLookup()), fold(registry, CompactKeyLookup())
    by_id = {r.key_id: what_auth_sees(r) for r in packed.records()}
    assert by_id == {r.key_id: what_auth_sees(r) for r in whole.records()}
    assert all(r.key_id in packed for r in whole.records())


def test_the_mirror_keeps_neither_names_nor_plaintexts(
    registry: KeyRegistry, secrets: list[str]
) -> None:
    packed = fold(registry, CompactKeyLookup())
    assert {r.name for r in packed.records()} == {None}
    assert all(s not in repr(vars(packed)) for s in secrets)


def test_a_revoked_public_key_no_longer_opens_its_origins(
    registry: KeyRegistry, secrets: list[str]
) -> None:
    packed = fold(registry, CompactKeyLookup())
    assert packed.public_origins() == frozenset()
    acme = next(o for o in packed.org_records() if o.plan == Plan.PRO.value)
    registry.create_key(
        acme.org_id,
        name="second site",
        env=Environment.TEST,
        key_type=KeyType.PUBLIC,
        actor=OPERATOR,
        allowed_origins=("https://staging.example",),
    )
    assert fold(registry, packed).public_origins() == {"https://staging.example"}


def test_an_unknown_hash_finds_nothing(registry: KeyRegistry, secrets: list[str]) -> None:
    packed = fold(registry, CompactKeyLookup())
    assert packed.get("0" * 64) is None
