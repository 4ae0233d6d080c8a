"""The key lookup tells a key the expiry worker retired from one a person revoked, everywhere."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from adapters.settings import Settings
from application.registry import KeyRegistry
from domain.actors import OPERATOR
from domain.api_key import ApiKey
from domain.key_format import Environment, KeyType, hash_key
from domain.key_states import EXPIRED_AT_EXPIRY
from domain.plans import Plan
from projections.key_lookup import KeyLookup
from projections.key_lookup_compact import CompactKeyLookup
from projections.key_lookup_updater import KeyLookupUpdater
from projections.live_key_lookup import open_key_lookup_view
from support.databases import fresh_database
from workers.expiry import ExpiryWorker


@pytest.fixture
def hashes(registry: KeyRegistry, settings: Settings) -> dict[str, str]:
    """Key hashes by fate: expired by the worker, revoked by a person, still active."""
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)

    issued = {
        fate: registry.create_key(
            org.id, name=fate, env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
        )
        for fate in ("expired", "revoked", "active")
    }
    registry.roll_key(issued["expired"].key.id, grace=timedelta(0), actor=OPERATOR)
    # The worker's very words from a person: still a revocation (who decides, not what).
    registry.revoke_key(issued["revoked"].key.id, actor=OPERATOR, reason=EXPIRED_AT_EXPIRY)
    assert ExpiryWorker(registry).run_once() == 1
    return {fate: hash_key(i.secret, settings.key_pepper) for fate, i in issued.items()}


def fates(lookup: KeyLookup, hashes: dict[str, str]) -> dict[str, tuple[bool, bool]]:
    """(revoked, expired) of each key as the lookup reads it by hash."""
    found = {fate: lookup.get(key_hash) for fate, key_hash in hashes.items()}
    return {fate: (r.revoked, r.expired) for fate, r in found.items() if r is not None}


EXPECTED = {"expired": (True, True), "revoked": (True, False), "active": (False, False)}


@pytest.mark.parametrize("model", [KeyLookup, CompactKeyLookup])
def test_the_expiry_workers_expiry_reads_expired_in_both_models(
    registry: KeyRegistry, hashes: dict[str, str], model: type[KeyLookup]
) -> None:
    lookup = model()
    KeyLookupUpdater(registry, lookup, view=None).catch_up_fully()
    assert fates(lookup, hashes) == EXPECTED


@pytest.mark.parametrize("model", [KeyLookup, CompactKeyLookup])
def test_an_expiry_stored_before_the_expired_event_reads_expired_in_both_models(
    registry: KeyRegistry, settings: Settings, model: type[KeyLookup]
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    issued = registry.create_key(
        org.id, name="old", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    key = registry.get_key(issued.key.id)  # as the expiry worker stored it before issue 12:
    key.trigger_event(ApiKey.Revoked, reason=EXPIRED_AT_EXPIRY, org_id=org.id, actor="system")
    registry.save(key)

    lookup = model()
    KeyLookupUpdater(registry, lookup, view=None).catch_up_fully()

    assert fates(lookup, {"old": hash_key(issued.secret, settings.key_pepper)}) == {
        "old": (True, True)
    }


def test_the_durable_view_remembers_expired_apart_from_revoked(
    registry: KeyRegistry, settings: Settings, hashes: dict[str, str]
) -> None:
    KeyLookupUpdater.from_view(registry, open_key_lookup_view(settings, "Fates")).catch_up_fully()
    view = open_key_lookup_view(settings, "Fates")

    # As an API process starts (load into its compact mirror) and as a mirror miss asks.
    assert fates(view.load(registry.name, CompactKeyLookup()), hashes) == EXPECTED
    found = {fate: view.find(key_hash) for fate, key_hash in hashes.items()}
    assert {f: (r[0].revoked, r[0].expired) for f, r in found.items() if r} == EXPECTED


def test_the_flag_costs_ordinary_keys_no_bit_of_their_packed_int(
    registry: KeyRegistry, hashes: dict[str, str]
) -> None:
    lookup = CompactKeyLookup()
    KeyLookupUpdater(registry, lookup, view=None).catch_up_fully()
    widths = {
        fate: lookup._packed[record.key_id.int].bit_length()
        for fate, key_hash in hashes.items()
        if (record := lookup.get(key_hash)) is not None
    }
    # Within 120 bits an int is four 30-bit digits (40 bytes); only retired keys go past.
    assert widths["active"] <= 120 and widths["revoked"] <= 120
    assert widths["expired"] == 121


def test_a_sqlite_view_from_before_the_expired_column_still_loads(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"ICODRIP_DATA_DIR": str(tmp_path), "ICODRIP_KEY_PEPPER": "p" * 32}
    )
    with sqlite3.connect(tmp_path / "oldview.sqlite3") as old:
        old.execute(
            "CREATE TABLE lookup_keys (key_hash TEXT PRIMARY KEY, key_id TEXT NOT NULL UNIQUE, "
            "org_id TEXT NOT NULL, env TEXT NOT NULL, type TEXT NOT NULL, name TEXT NOT NULL, "
            "hint TEXT NOT NULL, permissions TEXT, allowed_origins TEXT NOT NULL, "
            "expires_at REAL, revoked INTEGER NOT NULL, allowed_ips TEXT)"
        )
        old.execute(
            "INSERT INTO lookup_keys VALUES ('h', ?, ?, 'live', 'secret', 'n', 'ak_live_…abcd', "
            "NULL, '[]', 1700000000.0, 1, '[]')",
            ("1" * 32, "2" * 32),
        )

    (record,) = open_key_lookup_view(settings, "OldView").load("KeyRegistry").records()

    assert record.revoked and not record.expired


def test_a_postgres_view_from_before_the_expired_column_still_loads() -> None:
    with fresh_database("oldview") as url:
        with psycopg.connect(url) as old:
            old.execute(
                "CREATE TABLE oldview_keys (key_hash text PRIMARY KEY, "
                "key_id text NOT NULL UNIQUE, org_id text NOT NULL, env text NOT NULL, "
                "type text NOT NULL, name text NOT NULL, hint text NOT NULL, "
                "permissions text, allowed_origins text NOT NULL, "
                "expires_at double precision, revoked boolean NOT NULL, allowed_ips text)"
            )
            old.execute(
                "INSERT INTO oldview_keys VALUES ('h', %s, %s, 'live', 'secret', 'n', "
                "'ak_live_…abcd', NULL, '[]', 1700000000.0, true, '[]')",
                ("1" * 32, "2" * 32),
            )
        settings = Settings.from_env({"ICODRIP_DATABASE_URL": url, "ICODRIP_KEY_PEPPER": "p" * 32})

        (record,) = open_key_lookup_view(settings, "OldView").load("KeyRegistry").records()

    assert record.revoked and not record.expired
