"""Usage ingestion rate, alone and beside audit ingestion, over one JetStream stream, PostgreSQL.

Usage:
    .venv/bin/python bench/usage_ingest.py --events 200000
    .venv/bin/python bench/usage_ingest.py [--events 500000] [--per-message 256] [--fetch 256]
        [--orgs 50] [--keys-per-org 20] [--rate 20000]
        [--runs usage,audit,together,two-processes]
        [--postgres-admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Bounded: starts a fresh `nats-server` from the pinned wheel (JetStream file storage in a temp
dir, `sync_interval: always` like `icodrip dev`), publishes `--events` request events once
(`--orgs` organizations of `--keys-per-org` keys, 2 % 401s of unknown keys without an
organization, a status mix with 404s, 429s and 5xx, log-normal latencies, in time order at
`--rate` requests/s; `--per-message` events per JetStream message, as the API's publisher
sends them), then drains the whole stream once per run, each run with durable consumers of
its own and a fresh PostgreSQL database (created, then dropped):

- `usage`: the usage-ingest worker's consumer alone (`AuditIngester` over
  `open_usage_store`, what `icodrip worker usage` runs);
- `audit`: the audit-ingest worker's consumer alone (`icodrip worker audit`), for reference;
- `together`: both consumers at once in ONE process, as `icodrip worker` runs them (one
  event loop; each store write in a worker thread, so they share one GIL);
- `two-processes`: both at once, one process each (`icodrip worker audit` and
  `icodrip worker usage` started separately).

Each consumer fetches `--fetch` messages at a time and writes each fetch in one transaction
(the workers' default `ICODRIP_*_FETCH_BATCH`); the stream is full before a run starts, so
the figures are a backlog being drained (a worker catching up). A consumer's time runs from
its start to its last commit; a run's wall time from the first start to the last commit.
Prints a markdown table; checks that every event was counted once (audit rows = events, the
usage model's day buckets sum to the keyed events).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench, for its helpers

from audit_ingest import publish, start_nats

from adapters.request_events import RequestEvent, new_event_id
from adapters.settings import Settings
from projections.request_audit_store import open_request_audit_store
from projections.usage_org import ORG_WIDE_IDS
from projections.usage_store import open_usage_store
from workers.audit_ingest import AuditIngester, AuditIngestSettings

ROUTES = [("GET", "/v1/affiliates"), ("POST", "/v1/affiliates"), ("GET", "/v1/api-keys")]
AGENTS = ["python-httpx/0.27.0", "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "curl/8"]
STATUSES = [200] * 80 + [201] * 5 + [404] * 6 + [429] * 4 + [401] * 2 + [403] + [500] * 2
RUNS = ("usage", "audit", "together", "two-processes")


def make_events(
    count: int, orgs: int, keys_per_org: int, rate: float
) -> tuple[list[RequestEvent], int]:
    """The events in time order, and how many of them name a key (what usage counts)."""
    rng = random.Random(13)
    org_ids = [f"org_{uuid.UUID(int=rng.getrandbits(128)).hex}" for _ in range(orgs)]
    keys = [
        (o, f"key_{uuid.UUID(int=rng.getrandbits(128)).hex}")
        for o in org_ids
        for _ in range(keys_per_org)
    ]
    start = time.time() - count / rate  # a backlog that ends now
    events = []
    keyed = 0
    for i in range(count):
        unknown = i % 50 == 49
        org, key = (None, None) if unknown else rng.choice(keys)
        keyed += not unknown
        method, route = rng.choice(ROUTES)
        events.append(
            RequestEvent(
                id=new_event_id(),
                request_id=new_event_id(),
                key_id=key,
                key_hint=f"ak_live_…{rng.randrange(16**4):04x}",
                org_id=org,
                env=None if unknown else "live",
                method=method,
                route=route,
                path=route if method == "POST" else f"{route}?limit=20",
                status=401 if unknown else rng.choice(STATUSES),
                client_addr=f"203.0.113.{rng.randrange(1, 255)}",
                user_agent=rng.choice(AGENTS),
                latency_ms=round(rng.lognormvariate(1.0, 0.8), 3),
                occurred_at=start + i / rate + rng.uniform(-0.05, 0.05),  # processes interleave
            )
        )
    return events, keyed


# -- one consumer -----------------------------------------------------------------------------


@dataclass
class Drained:
    kind: str  # "audit" or "usage"
    counted: int  # rows written (audit) / events counted (usage)
    messages: int
    started: float  # time.monotonic(): system-wide, so comparable between processes
    finished: float  # the last commit

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def open_store(kind: str, settings: Settings) -> Any:
    return open_usage_store(settings) if kind == "usage" else open_request_audit_store(settings)


async def drain(kind: str, store: Any, nats_url: str, durable: str, fetch: int) -> Drained:
    """Run `kind`'s consumer over the stream until nothing is pending."""
    config = AuditIngestSettings.from_env({}, label=kind)
    config = AuditIngestSettings(
        durable=durable, label=kind, batch=fetch, ack_wait=120, replicas=config.replicas
    )
    last = [time.monotonic(), 0]
    committed = [0.0]
    ingester: AuditIngester[Any]

    def progress(_: object) -> None:
        now = committed[0] = time.monotonic()
        if now - last[0] >= 2.0:
            done = ingester.counters.inserted
            rate = (done - last[1]) / (now - last[0])
            print(f"  … {kind}: {done:,} events, {rate:,.0f}/s", file=sys.stderr)
            last[0], last[1] = now, done

    ingester = AuditIngester(store, nats_url, config, on_commit=progress)
    started = time.monotonic()
    await ingester.run_until_caught_up(timeout=600)
    c = ingester.counters
    return Drained(kind, c.inserted, c.messages, started, committed[0])


def drain_in_child(
    kind: str,
    settings: Settings,
    durable: str,
    fetch: int,
    ready: Any,
    results: Any,
) -> None:
    """One consumer in a process of its own (spawned): open, wait for the other, drain."""
    store = open_store(kind, settings)
    try:
        store.position()  # connected and the tables made before the clock starts
        ready.wait()
        assert settings.nats_url is not None
        results.put(asyncio.run(drain(kind, store, settings.nats_url, durable, fetch)))
    finally:
        store.close()


# -- the runs ---------------------------------------------------------------------------------


def run_in_process(settings: Settings, kinds: list[str], tag: str, fetch: int) -> list[Drained]:
    stores = {kind: open_store(kind, settings) for kind in kinds}
    try:
        for store in stores.values():
            store.position()
        assert settings.nats_url is not None
        url = settings.nats_url

        async def both() -> list[Drained]:
            return list(
                await asyncio.gather(
                    *(drain(k, stores[k], url, f"bench-{tag}-{k}", fetch) for k in kinds)
                )
            )

        return asyncio.run(both())
    finally:
        for store in stores.values():
            store.close()


def run_in_processes(settings: Settings, kinds: list[str], tag: str, fetch: int) -> list[Drained]:
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Barrier(len(kinds))
    results = spawn.Queue()
    children = [
        spawn.Process(
            target=drain_in_child,
            args=(kind, settings, f"bench-{tag}-{kind}", fetch, ready, results),
        )
        for kind in kinds
    ]
    for child in children:
        child.start()
    drained = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join(30)
        if child.exitcode != 0:
            raise RuntimeError(f"a consumer process failed ({child.exitcode})")
    return sorted(drained, key=lambda d: kinds.index(d.kind))


def counted_in(db_url: str, kind: str) -> int:
    """What the model holds: audit rows, or the requests summed over the keys' day buckets
    (and the same over the organizations' own buckets, which must agree)."""
    with psycopg.connect(db_url) as conn:
        table = "requestaudit_rows" if kind == "audit" else "usage_counters"
        if kind == "audit":
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        else:
            keys, orgs = conn.execute(
                "SELECT coalesce(sum(requests) FILTER (WHERE key_id <> ALL(%s)), 0), "
                "coalesce(sum(requests) FILTER (WHERE key_id = ANY(%s)), 0) "
                f"FROM {table} WHERE span = 86400",
                (list(ORG_WIDE_IDS), list(ORG_WIDE_IDS)),
            ).fetchone() or (0, 0)
            return int(keys) if keys == orgs else -1
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--per-message", type=int, default=256)
    parser.add_argument("--fetch", type=int, default=256, help="messages per fetch")
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--keys-per-org", type=int, default=20)
    parser.add_argument(
        "--rate", type=float, default=20_000, help="requests/s the events were made at"
    )
    parser.add_argument("--runs", default=",".join(RUNS), help=f"some of {','.join(RUNS)}")
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "ICODRIP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if unknown := set(runs) - set(RUNS):
        parser.error(f"unknown runs: {', '.join(sorted(unknown))}")

    workdir = Path(tempfile.mkdtemp(prefix="icodrip-bench-usage-"))
    admin = args.postgres_admin_url
    databases: list[str] = []
    nats_proc: subprocess.Popen[bytes] | None = None
    rows: list[tuple[str, list[Drained], dict[str, int]]] = []
    try:
        nats_proc, nats_url = start_nats(workdir / "nats")
        print(f"generating {args.events:,} events…", file=sys.stderr)
        events, keyed = make_events(args.events, args.orgs, args.keys_per_org, args.rate)
        print("publishing…", file=sys.stderr)
        published = asyncio.run(publish(nats_url, events, args.per_message))
        del events
        for n, run in enumerate(runs, 1):
            db = f"icodrip_bench_usage_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{db}"')
            databases.append(db)
            db_url = f"{admin.rsplit('/', 1)[0]}/{db}"
            settings = Settings(
                data_dir=workdir / f"data-{n}",
                database_url=db_url,
                nats_url=nats_url,
                key_pepper=b"b" * 32,
            )
            kinds = {"usage": ["usage"], "audit": ["audit"]}.get(run, ["audit", "usage"])
            how: Callable[[Settings, list[str], str, int], list[Drained]]
            how = run_in_processes if run == "two-processes" else run_in_process
            print(f"run {run}…", file=sys.stderr)
            drained = how(settings, kinds, f"{n}", args.fetch)
            rows.append((run, drained, {k: counted_in(db_url, k) for k in kinds}))

        messages = -(-args.events // args.per_message)
        expected = {"audit": args.events, "usage": keyed}
        print()
        print(
            f"Usage ingestion, {args.events:,} request events ({keyed:,} keyed; "
            f"{args.orgs * args.keys_per_org:,} keys, {args.orgs} orgs, made at "
            f"{args.rate:,.0f}/s) in {messages:,} messages of {args.per_message}, "
            f"fetches of {args.fetch} messages, PostgreSQL, {os.cpu_count()} CPUs; "
            f"published at {args.events / published:,.0f} events/s"
        )
        print()
        print("| run | consumer | events counted | time (s) | stream events/s | run wall (s) |")
        print("|---|---|---:|---:|---:|---:|")
        bad = []
        for run, drained, stored in rows:
            wall = max(d.finished for d in drained) - min(d.started for d in drained)
            for i, d in enumerate(drained):
                rate = args.events / d.seconds
                strong = f"**{rate:,.0f}**" if d.kind == "usage" else f"{rate:,.0f}"
                print(
                    f"| {run} | {d.kind} | {d.counted:,} | {d.seconds:.1f} | {strong} "
                    f"| {f'{wall:.1f}' if i == 0 else ''} |"
                )
                if d.counted != expected[d.kind] or stored[d.kind] != expected[d.kind]:
                    bad.append(f"{run}/{d.kind}: {d.counted} counted, {stored[d.kind]} stored")
            if len(drained) > 1:
                print(
                    f"| {run} | both: {2 * args.events:,} events in the wall time | | "
                    f"| {2 * args.events / wall:,.0f} | |"
                )
        if bad:
            print(f"\nMISMATCH (expected {expected}): " + "; ".join(bad))
            sys.exit(1)
    finally:
        if nats_proc is not None:
            nats_proc.terminate()
            nats_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
        with psycopg.connect(admin, autocommit=True) as conn:
            for db in databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
