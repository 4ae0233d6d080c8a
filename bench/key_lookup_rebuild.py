"""Key-lookup rebuild time: `icodrip projections rebuild key-lookup` over 100k keys on PostgreSQL.

Usage:
    .venv/bin/python bench/key_lookup_rebuild.py [--keys 100000] [--keys-per-org 1000]
        [--postgres-admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--keep]

Bounded: creates a fresh PostgreSQL database (dropped afterwards unless `--keep`), fills its
event store with `--keys` keys in organizations of `--keys-per-org` (each key saved with its
organization, in chunks of 500 per transaction, so the store holds what the product writes:
one `ApiKey.Created` and one `Organization.KeyAdded` per key, plus organization snapshots),
builds the live view once with the key-lookup updater (what the worker does), then times
`KeyLookupProjection.rebuild` — the code `icodrip projections rebuild key-lookup` runs — from
zero to the switch. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from adapters.settings import Settings
from application.registry import utc_now
from application.stores import open_registry
from bootstrap.projections import assemble_projections
from domain.actors import OPERATOR
from domain.api_key import ApiKey
from domain.key_format import Environment, KeyType
from domain.plans import Plan
from projections.key_lookup import KeyLookup
from projections.key_lookup_updater import KeyLookupUpdater
from projections.live_key_lookup import KEY_LOOKUP, open_key_lookup_view

CHUNK = 500


def fill(settings: Settings, keys: int, per_org: int) -> float:
    """Write `keys` keys through the domain; returns the seconds it took."""
    registry = open_registry(settings)
    started = time.monotonic()
    written = 0
    try:
        while written < keys:
            org = registry.register_organization(f"Bench {written // per_org}", Plan.PRO, OPERATOR)
            in_org = min(per_org, keys - written)
            while in_org > 0:
                batch = []
                for _ in range(min(CHUNK, in_org)):
                    key, _secret = ApiKey.issue(
                        org,
                        name=f"key {written}",
                        env=Environment.LIVE,
                        key_type=KeyType.SECRET,
                        pepper=settings.key_pepper,
                        actor=OPERATOR,
                        now=utc_now(),
                    )
                    batch.append(key)
                    written += 1
                    in_org -= 1
                registry.save(org, *batch)
            print(f"\r  written {written:,}/{keys:,} keys", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        return time.monotonic() - started
    finally:
        registry.close()


def build_live_view(settings: Settings) -> float:
    """Fold the store into the live view once, as the key-lookup worker would."""
    registry = open_registry(settings)
    started = time.monotonic()
    try:
        updater = KeyLookupUpdater(
            registry, KeyLookup(), open_key_lookup_view(settings, "KeyLookup")
        )
        while updater.catch_up(1000):
            pass
        return time.monotonic() - started
    finally:
        registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--keys-per-org", type=int, default=1000)
    parser.add_argument(
        "--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    database = f"icodrip_bench_rebuild_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    base = args.postgres_admin_url.rsplit("/", 1)[0]
    os.environ["ICODRIP_DATABASE_URL"] = f"{base}/{database}"
    os.environ.setdefault("ICODRIP_KEY_PEPPER", "bench-pepper-" + "x" * 32)
    try:
        settings = Settings.from_env()
        fill_seconds = fill(settings, args.keys, args.keys_per_org)
        live_seconds = build_live_view(settings)
        registry = open_registry(settings)
        events = registry.recorder.max_notification_id() or 0
        registry.close()

        last = [0.0]

        def progress(p: object) -> None:
            now = time.monotonic()
            if now - last[0] >= 1.0:
                last[0] = now
                print(f"\r  rebuilding: {p.position:,}/{p.target:,}", end="", file=sys.stderr)  # type: ignore[attr-defined]

        report = assemble_projections(settings)[KEY_LOOKUP].rebuild(progress=progress, grace=0.0)
        print(file=sys.stderr)
        print(f"\n{args.keys:,} keys in {args.keys // args.keys_per_org} orgs; {events:,} events\n")
        print("| step | seconds | events/s |")
        print("|---|---:|---:|")
        print(
            f"| write the keys through the domain | {fill_seconds:.1f} "
            f"| {events / fill_seconds:,.0f} |"
        )
        print(
            f"| first build of the live view | {live_seconds:.1f} | {events / live_seconds:,.0f} |"
        )
        print(
            f"| `projections rebuild key-lookup` (fresh copy → switch) | {report.seconds:.1f} "
            f"| {report.rate:,.0f} |"
        )
        print(f"\nrows in the new view: {report.rows:,}")
    finally:
        if not args.keep:
            with psycopg.connect(args.postgres_admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
