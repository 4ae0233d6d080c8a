"""Listing an organization's keys (`GET /v1/api-keys`, Settings > API Keys): from the key
listing (ADR 0021) against loading each key's aggregate, as before it.

Usage:
    .venv/bin/python bench/key_listing.py [--keys 1000] [--rounds 20] [--backend postgres|sqlite]
        [--postgres-admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Bounded: one organization with `--keys` keys (each renamed once, so a key has two events) in a
fresh database (PostgreSQL: created and dropped; SQLite: a temporary directory), the key-lookup
view caught up as its worker would, then `KeyManagement.org_keys` (last use not asked) timed
`--rounds` times each way. Prints a markdown table of the median and p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from adapters.settings import Settings
from application.key_management import KeyManagement
from application.registry import KeyRegistry
from application.stores import open_registry
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.plans import Plan
from projections.key_listing_reader import KeyListingReader
from projections.key_lookup_updater import KeyLookupUpdater
from projections.live_key_lookup import open_key_lookup_view


def timed(call: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median and p95 of `rounds` calls, in ms (after one warm-up call)."""
    call()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def fill(registry: KeyRegistry, keys: int) -> uuid.UUID:
    org = registry.register_organization("Bench", Plan.AGENCY, OPERATOR)
    for i in range(keys):
        issued = registry.create_key(
            org.id, name=f"key {i}", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
        )
        registry.rename_key(issued.key.id, name=f"renamed {i}", actor=OPERATOR)
    return org.id


def run(settings: Settings, keys: int, rounds: int) -> None:
    registry = open_registry(settings)
    started = time.monotonic()
    org_id = fill(registry, keys)
    print(f"filled {keys} keys in {time.monotonic() - started:.1f} s", file=sys.stderr)
    view = open_key_lookup_view(settings)
    KeyLookupUpdater.from_view(registry, view).catch_up_fully()
    by_aggregate = KeyManagement(registry)
    by_listing = KeyManagement(registry, read_keys=KeyListingReader(registry, view).keys)
    assert len(by_listing.org_keys(OPERATOR, org_id, with_use=False).keys) == keys
    backend = "SQLite" if settings.is_embedded else "PostgreSQL"
    print(f"| way ({backend}, {keys} keys) | median ms | p95 ms |")
    print("|---|---|---|")
    for name, management in (("aggregate per key", by_aggregate), ("key listing", by_listing)):
        median, p95 = timed(
            lambda m=management: m.org_keys(OPERATOR, org_id, with_use=False), rounds
        )
        print(f"| {name} | {median:.1f} | {p95:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {"ICODRIP_DATA_DIR": data_dir, "ICODRIP_KEY_PEPPER": uuid.uuid4().hex * 2}
        if args.backend == "sqlite":
            run(Settings.from_env(env), args.keys, args.rounds)
            return
        database = f"bench_listing_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres_admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        try:
            url = args.postgres_admin_url.rsplit("/", 1)[0] + f"/{database}"
            run(Settings.from_env({**env, "ICODRIP_DATABASE_URL": url}), args.keys, args.rounds)
        finally:
            with psycopg.connect(args.postgres_admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
