"""Micro-benchmark of the usage model's ingestion: the fold alone, then fold + store write.

Usage:
    .venv/bin/python bench/usage_fold.py [--events 1000000] [--batch 16384] [--keys 1000]
                                         [--orgs 10] [--rate 50000]
                                         [--database-url postgresql://postgres@127.0.0.1/db]

Synthetic, already decoded `AuditEntry`s (what `request_audit.decode_messages` yields;
decoding is not measured): `--keys` keys spread over `--orgs` organizations, in time order as
the stream holds them at `--rate` requests/s (so a fetch spans a minute or two), a status mix
with 404s, 429s, 401s and 5xx, log-normal latencies, 256 events per message. Prints events/s
for `fold_usage` alone, then for `store.write` per fetch of `--batch` events (duplicate check
by event id, fold, read-merge-write of the buckets, position) on a fresh SQLite store in a
temporary directory, and on PostgreSQL if `--database-url` names a scratch database. One
process, one thread: what one ingest worker does.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from adapters.request_events import new_event_id  # noqa: E402
from adapters.settings import Settings  # noqa: E402
from projections.request_audit import AuditEntry, Decoded  # noqa: E402
from projections.usage import fold_usage  # noqa: E402
from projections.usage_store import open_usage_store  # noqa: E402

PER_MESSAGE = 256
STATUSES = [200] * 80 + [201] * 5 + [404] * 6 + [429] * 4 + [401] * 2 + [403] + [500] * 2


def synthetic(events: int, keys: int, orgs: int, rate: float) -> list[AuditEntry]:
    """Plausible entries: ids as the API mints them, keys evenly over the organizations."""
    rng = random.Random(13)
    key_ids = [f"key_{rng.getrandbits(128):032x}" for _ in range(keys)]
    org_ids = [f"org_{rng.getrandbits(128):032x}" for _ in range(orgs)]
    start = 1_772_366_400.0
    return [
        AuditEntry(
            org_id=org_ids[k % orgs],
            seq=0,
            event_id=new_event_id(),
            request_id=new_event_id(),
            key_id=key_ids[k],
            key_hint=None,
            env="live",
            method="GET",
            route="/v1/affiliates",
            path="/v1/affiliates",
            status=rng.choice(STATUSES),
            client_addr="10.0.0.7",
            user_agent="billing-service/2.3",
            latency_ms=round(rng.lognormvariate(1.0, 0.8), 3),
            occurred_at=start + i / rate + rng.uniform(-0.05, 0.05),  # API processes interleave
        )
        for i, k in enumerate(rng.randrange(keys) for _ in range(events))
    ]


def batches(entries: list[AuditEntry], size: int) -> list[Decoded]:
    """The entries as fetches of `size` events, 256 to a message, stream sequences from 1."""
    fetches: list[Decoded] = []
    seq = 0
    for lo in range(0, len(entries), size):
        fetch: Decoded = []
        for m in range(lo, min(lo + size, len(entries)), PER_MESSAGE):
            seq += 1
            fetch.append((seq, entries[m : min(m + PER_MESSAGE, lo + size, len(entries))]))
        fetches.append(fetch)
    return fetches


def bench_fold(fetches: list[Decoded], events: int) -> None:
    started = time.perf_counter()
    buckets = 0
    for fetch in fetches:
        buckets += len(fold_usage(e for _, entries in fetch for e in entries))
    seconds = time.perf_counter() - started
    print(f"{'fold_usage':<28} {events / seconds:>10,.0f} events/s  ({buckets:,} buckets)")


def bench_store(label: str, settings: Settings, fetches: list[Decoded], events: int) -> None:
    store = open_usage_store(settings, "UsageBench")
    try:
        started = time.perf_counter()
        for fetch in fetches:
            store.write(fetch, fetch[-1][0])
        seconds = time.perf_counter() - started
        again = time.perf_counter()
        store.write(fetches[0], fetches[0][-1][0])  # a redelivered fetch: all duplicates
        redelivered = time.perf_counter() - again
        print(
            f"{'fold + write, ' + label:<28} {events / seconds:>10,.0f} events/s  "
            f"({store.count():,} buckets; a redelivered fetch: {redelivered * 1e3:.0f} ms)"
        )
    finally:
        store.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=16_384)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--orgs", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    entries = synthetic(args.events, args.keys, args.orgs, args.rate)
    fetches = batches(entries, args.batch)
    print(f"{args.events:,} events, fetches of {args.batch:,}, {args.keys:,} keys")
    bench_fold(fetches, args.events)
    with tempfile.TemporaryDirectory() as data_dir:
        sqlite = Settings.from_env({"ICODRIP_DATA_DIR": data_dir})
        bench_store("SQLite", sqlite, fetches, args.events)
        if args.database_url:
            env = {
                "ICODRIP_DATA_DIR": data_dir,
                "ICODRIP_DATABASE_URL": args.database_url,
                "ICODRIP_KEY_PEPPER": "bench-pepper-" + uuid.uuid4().hex,  # settings want one
            }
            bench_store("PostgreSQL", Settings.from_env(env), fetches, args.events)


if __name__ == "__main__":
    main()
