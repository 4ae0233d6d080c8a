"""The key-lookup view carries each key's IP allowlist, including views made before it existed."""

from __future__ import annotations

import sqlite3

from adapters.settings import Settings
from application.registry import KeyRegistry
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType, hash_key
from domain.plans import Plan
from projections.key_lookup_updater import KeyLookupUpdater
from projections.live_key_lookup import open_key_lookup_view


def test_an_allowlist_change_reaches_the_durable_view(
    registry: KeyRegistry, settings: Settings
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    issued = registry.create_key(
        org.id,
        name="Backend",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
        allowed_ips=("203.0.113.0/24",),
    )
    registry.change_key(issued.key.id, allowed_ips=["198.51.100.0/24", "10.0.0.1"], actor=OPERATOR)
    KeyLookupUpdater.from_view(registry, open_key_lookup_view(settings, "IpView")).catch_up_fully()

    found = open_key_lookup_view(settings, "IpView").find(
        hash_key(issued.secret, settings.key_pepper)
    )
    assert found is not None
    assert found[0].allowed_ips == ("10.0.0.1/32", "198.51.100.0/24")


def test_a_sqlite_view_from_before_allowlists_gains_the_column(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_env(
        {"ICODRIP_DATA_DIR": str(tmp_path), "ICODRIP_KEY_PEPPER": "p" * 32}
    )
    path = tmp_path / "oldview.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE lookup_keys (key_hash TEXT PRIMARY KEY, key_id TEXT NOT NULL UNIQUE, "
            "org_id TEXT NOT NULL, env TEXT NOT NULL, type TEXT NOT NULL, name TEXT NOT NULL, "
            "hint TEXT NOT NULL, permissions TEXT, allowed_origins TEXT NOT NULL, "
            "expires_at REAL, revoked INTEGER NOT NULL)"
        )
        old.execute(
            "INSERT INTO lookup_keys VALUES ('h', ?, ?, 'live', 'secret', 'n', 'ak_live_…abcd', "
            "NULL, '[]', NULL, 0)",
            ("1" * 32, "2" * 32),
        )
    view = open_key_lookup_view(settings, "OldView")
    (record,) = view.load("KeyRegistry").records()
    assert record.allowed_ips == ()
