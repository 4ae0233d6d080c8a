"""Resident memory of the in-memory key-lookup mirror, per key, for N keys.

Builds the mirror exactly as an API process does when it starts (`KeyLookupView.load`): one
`KeyRecord` per row of the durable view, through the view's own `_key_record`, indexed by hash
and by id (`KeyLookup.add_key`), plus one `OrgRecord` per organization. The rows are generated
(realistic shapes: 64-hex HMAC, UUIDs, names, hints, no restriction, no origins) one at a time,
so that only what the mirror keeps stays allocated. Two measures:

- `tracemalloc`: bytes allocated by Python and still held once the mirror is built;
- RSS: the process's resident set before and after (`/proc/self/statm`), what an operator sees.

Usage: .venv/bin/python bench/mirror_memory.py --keys 100000 1000000 [--keys-per-org 10]
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
        )


def measure(keys: int, keys_per_org: int, traced: bool) -> dict[str, Any]:
    from projections.key_lookup import KeyLookup, OrgRecord
    from projections.key_lookup_view import _key_record

    gc.collect()
    rss_before = rss_bytes()
    if traced:  # tracemalloc's own bookkeeping inflates RSS: RSS is measured in another run
        tracemalloc.start()
    started = time.perf_counter()
    lookup = KeyLookup()
    org_ids = set()
    for row in rows(keys, keys_per_org):
        record = _key_record(row)
        lookup.add_key(record)
        org_ids.add(record.org_id)
    for org_id in org_ids:
        lookup.add_org(OrgRecord(org_id, "pro"))
    org_ids.clear()
    elapsed = time.perf_counter() - started
    gc.collect()
    result: dict[str, Any] = {"keys": keys, "orgs": len(lookup.orgs), "build_seconds": elapsed}
    if traced:
        result["per_key"] = tracemalloc.get_traced_memory()[0] / keys
        tracemalloc.stop()
    else:
        result["per_key"] = (rss_bytes() - rss_before) / keys
    assert len(lookup.by_hash) == keys
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--keys-per-org", type=int, default=10)
    parser.add_argument(
        "--traced-up-to", type=int, default=100_000, help="tracemalloc only up to this many keys"
    )
    parser.add_argument("--child", choices=["rss", "traced"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.keys[0], args.keys_per_org, args.child == "traced")))
        return

    def child(mode: str, n: int) -> dict[str, Any]:
        out = subprocess.run(
            [
                *(sys.executable, __file__, "--child", mode),
                *("--keys", str(n), "--keys-per-org", str(args.keys_per_org)),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=170,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    print(f"{'keys':>10} {'orgs':>8} {'RSS B/key':>10} {'traced B/key':>13} {'build s':>8}")
    for n in args.keys:
        rss = child("rss", n)
        traced = f"{child('traced', n)['per_key']:.0f}" if n <= args.traced_up_to else "-"
        verdict = "within" if rss["per_key"] <= TARGET else "OVER"
        print(
            f"{n:>10,} {rss['orgs']:>8,} {rss['per_key']:>10.0f} {traced:>13} "
            f"{rss['build_seconds']:>8.1f}  ({verdict} the {TARGET} B/key target)"
        )


if __name__ == "__main__":
    main()
