"""Resident memory of the in-memory key-lookup mirror, per key, for N keys.

Builds the mirror exactly as an API process does when it starts (`KeyLookupView.load` into a
`CompactKeyLookup`): one `KeyRecord` per row of the durable view, through the view's own
`_key_record`, added with `add_key`, plus one `OrgRecord` per organization (`--model full`
measures the worker's `KeyLookup` of whole records instead). The rows are generated
(realistic shapes: 64-hex HMAC, UUIDs, names, hints, no restriction, no origins) one at a time,
so that only what the mirror keeps stays allocated. Two measures:

- `tracemalloc`: bytes allocated by Python and still held once the mirror is built;
- RSS: the process's resident set before and after (`/proc/self/statm`), what an operator sees.

It also times a mirror hit as authentication makes it (`get` by hash, then `principal`).

Usage: .venv/bin/python bench/mirror_memory.py --keys 100000 1000000 [--keys-per-org 10]
       [--model compact|full] [--from-postgres ADMIN_URL]

With `--from-postgres`, each size is instead written to a durable view in a fresh PostgreSQL
database and loaded by a child process through `KeyLookupView.load`, the API's start-up path
(driver, server-side cursor and all): the figure an operator sees.
Each size runs in a child process of its own, so that one does not inherit the other's heap.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TARGET = 300  # bytes per key (issue 7)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rows(keys: int, keys_per_org: int) -> Iterator[tuple[Any, ...]]:
    """Rows shaped like `lookup_keys` (SQLite returns fresh str objects for each row)."""
    from domain.key_format import Environment, KeyType, generate_key, hash_key, hint_for

    pepper = b"bench-pepper-0123456789abcdef"
    key_text = generate_key(KeyType.SECRET, Environment.LIVE)
    key_hash = hash_key(key_text, pepper)
    rng = random.Random(7)
    orgs = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(max(1, keys // keys_per_org))]
    for i in range(keys):
        # A distinct hash per key without paying for a fresh HMAC each time.
        h = f"{i:08x}{key_hash[8:]}"
        yield (
            h,
            f"{rng.getrandbits(128):032x}",
            orgs[i % len(orgs)],
            "live" + "",  # a str per row, as the driver returns it
            "".join(["sec", "ret"]),
            f"service key {i}",
            hint_for(key_text[:-4] + f"{i % 10000:04d}"),
            None,
            "[]",
            None,
            0,
            "[]",
            0,
        )


def measure(keys: int, keys_per_org: int, traced: bool, model: str) -> dict[str, Any]:
    from projections.key_lookup import KeyLookup, OrgRecord
    from projections.key_lookup_compact import CompactKeyLookup
    from projections.key_lookup_rows import key_record

    gc.collect()
    rss_before = rss_bytes()
    if traced:  # tracemalloc's own bookkeeping inflates RSS: RSS is measured in another run
        tracemalloc.start()
    started = time.perf_counter()
    lookup = CompactKeyLookup() if model == "compact" else KeyLookup()
    org_ids = set()
    for row in rows(keys, keys_per_org):
        record = key_record(row)
        lookup.add_key(record)
        org_ids.add(record.org_id)
        last_hash = record.key_hash
    for org_id in org_ids:
        lookup.add_org(OrgRecord(org_id, "pro"))
    org_ids.clear()
    elapsed = time.perf_counter() - started
    gc.collect()
    orgs = sum(1 for _ in lookup.org_records())
    result: dict[str, Any] = {"keys": keys, "orgs": orgs, "build_seconds": elapsed}
    if traced:
        result["per_key"] = tracemalloc.get_traced_memory()[0] / keys
        tracemalloc.stop()
    else:
        result["per_key"] = (rss_bytes() - rss_before) / keys
    assert len(lookup) == keys
    found = lookup.get(last_hash)
    assert found is not None and found.hint.endswith(f"{(keys - 1) % 10000:04d}")
    if not traced:  # what a mirror hit costs authentication: find the key, make its principal
        rounds = 200_000
        started = time.perf_counter()
        for _ in range(rounds):
            lookup.principal(lookup.get(last_hash) or found)
        result["hit_us"] = (time.perf_counter() - started) / rounds * 1e6
    return result


def fill_postgres_view(keys: int, keys_per_org: int) -> None:
    """Write `keys` generated rows into a fresh durable view, as the worker would."""
    from eventsourcing.persistence import Tracking

    from adapters.settings import Settings
    from projections.key_lookup import Changes, OrgRecord
    from projections.key_lookup_rows import key_record
    from projections.key_lookup_view import open_named_key_lookup_view

    view = open_named_key_lookup_view(Settings.from_env(), "KeyLookup")
    changes = Changes()
    for written, row in enumerate(rows(keys, keys_per_org), start=1):
        record = key_record(row)
        changes.keys[record.key_id] = record
        changes.orgs.setdefault(record.org_id, OrgRecord(record.org_id, "pro"))
        if len(changes.keys) == 10_000 or written == keys:
            view.write(changes, Tracking("KeyRegistry", written))
            changes = Changes()
            print(f"\r  view rows {written:,}/{keys:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def measure_view_load(keys: int, model: str) -> dict[str, Any]:
    """RSS growth of loading the mirror from the durable view, as an API process starts."""
    from adapters.memory import release_free_heap
    from adapters.settings import Settings
    from projections.key_lookup import KeyLookup
    from projections.key_lookup_compact import CompactKeyLookup
    from projections.key_lookup_view import open_named_key_lookup_view

    view = open_named_key_lookup_view(Settings.from_env(), "KeyLookup")
    assert view.count() == keys
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    lookup = view.load("KeyRegistry", CompactKeyLookup() if model == "compact" else KeyLookup())
    elapsed = time.perf_counter() - started
    gc.collect()
    assert len(lookup) == keys
    untrimmed = (rss_bytes() - rss_before) / keys
    release_free_heap()  # as the API process does once its mirror is loaded
    return {
        "keys": keys,
        "orgs": sum(1 for _ in lookup.org_records()),
        "per_key": (rss_bytes() - rss_before) / keys,
        "untrimmed": untrimmed,
        "build_seconds": elapsed,
    }


def through_postgres(args: argparse.Namespace) -> None:
    """Each size: a fresh database, its view filled, then loaded by a child process."""
    import psycopg

    print(
        f"{'keys':>10} {'orgs':>8} {'RSS B/key':>10} {'untrimmed':>10} {'load s':>8}  "
        "(loaded from PostgreSQL)"
    )
    base = args.from_postgres.rsplit("/", 1)[0]
    for n in args.keys:
        database = f"icodrip_bench_mirror_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.from_postgres, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        env = {**os.environ, "ICODRIP_DATABASE_URL": f"{base}/{database}"}
        env.setdefault("ICODRIP_KEY_PEPPER", "bench-pepper-" + "x" * 32)
        try:
            subprocess.run(
                [sys.executable, __file__, "--child", "fill", *_sizes(n, args)],
                env=env,
                check=True,
                timeout=900,
            )
            out = subprocess.run(
                [sys.executable, __file__, "--child", "load", *_sizes(n, args)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
        finally:
            with psycopg.connect(args.from_postgres, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        verdict = "within" if result["per_key"] <= TARGET else "OVER"
        print(
            f"{n:>10,} {result['orgs']:>8,} {result['per_key']:>10.0f} "
            f"{result['untrimmed']:>10.0f} {result['build_seconds']:>8.1f}  "
            f"({args.model}: {verdict} the {TARGET} B/key target)"
        )


def _sizes(n: int, args: argparse.Namespace) -> list[str]:
    return ["--keys", str(n), "--keys-per-org", str(args.keys_per_org), "--model", args.model]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--keys-per-org", type=int, default=10)
    parser.add_argument(
        "--traced-up-to", type=int, default=100_000, help="tracemalloc only up to this many keys"
    )
    parser.add_argument(
        "--model",
        choices=["compact", "full"],
        default="compact",
        help="compact: the API processes' mirror; full: the worker's whole records",
    )
    parser.add_argument(
        "--from-postgres",
        metavar="ADMIN_URL",
        help="instead: load each mirror from a durable view in a fresh PostgreSQL database "
        "(e.g. postgresql://postgres@127.0.0.1:5432/postgres; dropped afterwards)",
    )
    parser.add_argument(
        "--child", choices=["rss", "traced", "fill", "load"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child == "fill":
        fill_postgres_view(args.keys[0], args.keys_per_org)
        return
    if args.child == "load":
        print(json.dumps(measure_view_load(args.keys[0], args.model)))
        return
    if args.child:
        traced = args.child == "traced"
        print(json.dumps(measure(args.keys[0], args.keys_per_org, traced, args.model)))
        return
    if args.from_postgres:
        through_postgres(args)
        return

    def child(mode: str, n: int) -> dict[str, Any]:
        out = subprocess.run(
            [
                *(sys.executable, __file__, "--child", mode),
                *("--keys", str(n), "--keys-per-org", str(args.keys_per_org)),
                *("--model", args.model),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=170,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    print(
        f"{'keys':>10} {'orgs':>8} {'RSS B/key':>10} {'traced B/key':>13} {'build s':>8} "
        f"{'hit µs':>7}"
    )
    for n in args.keys:
        rss = child("rss", n)
        traced = f"{child('traced', n)['per_key']:.0f}" if n <= args.traced_up_to else "-"
        verdict = "within" if rss["per_key"] <= TARGET else "OVER"
        print(
            f"{n:>10,} {rss['orgs']:>8,} {rss['per_key']:>10.0f} {traced:>13} "
            f"{rss['build_seconds']:>8.1f} {rss['hit_us']:>7.1f}  "
            f"({args.model}: {verdict} the {TARGET} B/key target)"
        )


if __name__ == "__main__":
    main()
