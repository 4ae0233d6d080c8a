"""Reading usage: `GET /v1/usage` for an organization with 1,000 keys over 24 h by the minute.

Usage:
    .venv/bin/python bench/usage_query.py
    .venv/bin/python bench/usage_query.py [--keys 1000] [--events 1000000] [--skew 1.0]
        [--rounds 30] [--workers 1] [--no-http] [--profile 10]
        [--postgres-admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Bounded: a fresh PostgreSQL database (created, then dropped), its own NATS server from the
pinned wheel, the machine's Redis; everything on 127.0.0.1, stopped at the end.

1. One organization (agency plan, a rate limit of 10M/min) with `--keys` live secret keys made
   through the registry, the key-lookup view caught up as its worker leaves it.
2. The usage model filled through `store.write` (what the usage worker calls per fetch) with
   `--events` synthetic, already decoded request events of those keys spread over the 24 h
   ending at the current minute: keys Zipf-distributed (exponent `--skew`: a few busy keys
   hit every minute, the quietest a few dozen minutes a day), the status mix of
   bench/usage_fold.py, log-normal latencies; fetches of 65,536 events, 256 to a message.
3. The same reads timed `--rounds` times each (after two warm-ups), first in-process
   (`UsageReports.report` over `LiveUsageStore`, as the route calls it, operator actor), then
   as real HTTPS requests, one at a time over a kept-alive connection, to
   `icodrip serve --workers N` with the first key as the Bearer: the response parsed and
   checked (`object`, `data`, `totals`).

The reads, all over the last 24 h (`from` = the current minute minus 24 h, `to` = the current
minute; so the totals read the minutes at both ends and the hours between):

- minute granularity, the first page with the default limit (1,000 rows) and the totals:
  the issue's target (< 200 ms p95 over HTTP);
- the same with `limit=10000` (the largest page);
- the next page after the first (`cursor`);
- one key (`key_id`: the busiest), minute granularity;
- hour granularity, the first page.

Prints markdown tables: the fill, then median / p95 / p99 / max in ms per read and way.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benches, for helpers

from api_throughput import free_port, start, stop, wait_ready
from audit_ingest import start_nats

from adapters.request_events import new_event_id
from adapters.settings import Settings
from adapters.tls import ensure_self_signed
from application.registry import KeyRegistry
from application.stores import open_registry
from domain.actors import OPERATOR
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment, KeyType
from domain.plans import Plan
from projections.key_lookup_updater import KeyLookupUpdater
from projections.live_key_lookup import LiveKeyLookupView
from projections.request_audit import AuditEntry, Decoded
from projections.usage_live import LiveUsageStore
from projections.usage_report import UsageReports, UsageWindow
from projections.usage_store import open_usage_store

BIN = Path(sys.executable).parent
STATUSES = [200] * 80 + [201] * 5 + [404] * 6 + [429] * 4 + [401] * 2 + [403] + [500] * 2
PER_MESSAGE = 256
FETCH = 65_536
DAY = 86_400


def rfc3339(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_keys(registry: KeyRegistry, keys: int) -> tuple[UUID, list[UUID], str]:
    """The organization, its keys' ids and the first key's secret."""
    org = registry.register_organization("Usage bench", Plan.AGENCY, OPERATOR)
    registry.set_rate_limit(org.id, 10_000_000, OPERATOR)
    ids, secret = [], ""
    for i in range(keys):
        issued = registry.create_key(
            org.id, name=f"key {i}", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
        )
        ids.append(issued.key.id)
        secret = secret or issued.secret
    return org.id, ids, secret


def fetches(
    org_id: str, key_ids: list[str], events: int, skew: float, end: int
) -> Iterator[Decoded]:
    """`events` request events over [end - 24 h, end), Zipf over the keys, in time order, as
    decoded fetches of `FETCH` events (256 to a message, stream sequences from 1)."""
    rng = random.Random(13)
    weights = list(itertools.accumulate(1 / (rank**skew) for rank in range(1, len(key_ids) + 1)))
    total = weights[-1]
    times = sorted(rng.uniform(end - DAY, end) for _ in range(events))
    seq = 0
    for lo in range(0, events, FETCH):
        fetch: Decoded = []
        for m in range(lo, min(lo + FETCH, events), PER_MESSAGE):
            entries = []
            for at in times[m : min(m + PER_MESSAGE, events)]:
                key = key_ids[bisect.bisect_left(weights, rng.random() * total)]
                entries.append(
                    AuditEntry(
                        org_id=org_id,
                        seq=0,
                        event_id=new_event_id(),
                        request_id=new_event_id(),
                        key_id=key,
                        key_hint=None,
                        env="live",
                        method="GET",
                        route="/v1/affiliates",
                        path="/v1/affiliates",
                        status=rng.choice(STATUSES),
                        client_addr="10.0.0.7",
                        user_agent="billing-service/2.3",
                        latency_ms=round(rng.lognormvariate(1.0, 0.8), 3),
                        occurred_at=at,
                    )
                )
            seq += 1
            fetch.append((seq, entries))
        yield fetch


def timed(call: Callable[[], object], rounds: int) -> list[float]:
    """Each of `rounds` calls in ms (after two warm-up calls)."""
    call()
    call()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)

    def rank(q: float) -> float:  # nearest rank
        return ordered[max(0, math.ceil(round(q * len(ordered), 9)) - 1)]

    return (
        f"{statistics.median(ordered):.1f} | {rank(0.95):.1f} | {rank(0.99):.1f} "
        f"| {ordered[-1]:.1f}"
    )


def profile(server: subprocess.Popen[bytes], call: Callable[[], object], seconds: int) -> None:
    """py-spy on the API worker while `call` repeats for `seconds`: inclusive shares."""
    worker = subprocess.run(
        ["pgrep", "-P", str(server.pid)], capture_output=True, text=True
    ).stdout.split()[0]
    out = Path(tempfile.mkdtemp(prefix="icodrip-profile-")) / "stacks.txt"
    record = ["record", "--format", "raw", "--rate", "250", "--nonblocking", "--threads"]
    spy = subprocess.Popen(
        [str(BIN / "py-spy"), *record, "-d", str(seconds), "-o", str(out), "-p", worker],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    calls, deadline = 0, time.monotonic() + seconds - 1
    while time.monotonic() < deadline:
        call()
        calls += 1
    spy.wait()
    inclusive: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        seen = set()
        for frame in stack.split(";"):
            where = frame.rsplit("/", 1)[-1].split(":")[0].rstrip(")")
            function = f"{frame.split(' (')[0]} {where}"
            if function not in seen:
                seen.add(function)
                inclusive[function] = inclusive.get(function, 0) + int(count)
    print(f"\npy-spy, the API worker, {calls} requests, {total:,} samples (raw stacks: {out})")
    print("\n| function | inclusive |\n|---|---:|")
    for function, samples in sorted(inclusive.items(), key=lambda kv: -kv[1])[:45]:
        print(f"| `{function}` | {100 * samples / total:.1f} % |")


class Read:
    """One read, as the route's query parameters and as `UsageReports.report`'s arguments."""

    def __init__(self, name: str, params: dict[str, str], **report: Any) -> None:
        self.name, self.params, self.report = name, params, report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=1_000_000, help="over the 24 h")
    parser.add_argument("--skew", type=float, default=1.0, help="Zipf exponent over the keys")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1, help="icodrip serve --workers")
    parser.add_argument("--no-http", action="store_true", help="in-process reads only")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="then profile the API worker (py-spy) under the first read for SECONDS",
    )
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "ICODRIP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()

    admin = args.postgres_admin_url
    db = f"icodrip_bench_usageq_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    tmp = Path(tempfile.mkdtemp(prefix="icodrip-bench-usageq-"))
    procs: list[subprocess.Popen[bytes]] = []
    nats_proc: subprocess.Popen[bytes] | None = None
    try:
        nats_proc, nats_url = start_nats(tmp / "nats")
        env = {
            **os.environ,
            "ICODRIP_DATA_DIR": str(tmp / "data"),
            "ICODRIP_DATABASE_URL": f"{admin.rsplit('/', 1)[0]}/{db}",
            "ICODRIP_NATS_URL": nats_url,
            "ICODRIP_REDIS_URL": "redis://127.0.0.1:6379/0",
            "ICODRIP_KEY_PEPPER": "bench-pepper-" + uuid.uuid4().hex,
        }
        settings = Settings.from_env(env)

        started = time.perf_counter()
        registry = open_registry(settings)
        org_uuid, key_uuids, secret = make_keys(registry, args.keys)
        view = LiveKeyLookupView(settings)
        KeyLookupUpdater.from_view(registry, view).catch_up_fully()
        view.close()
        made_keys = time.perf_counter() - started
        print(f"{args.keys:,} keys in {made_keys:.1f} s", file=sys.stderr)

        org_id = format_org_id(org_uuid)
        key_ids = [format_key_id(k) for k in key_uuids]
        end = int(time.time()) // 60 * 60  # the current minute: the last 24 h end there
        start_at = end - DAY
        reader = LiveUsageStore(settings)
        reader.name  # noqa: B018 - opens (creates) the live copy, as the API does
        store = open_usage_store(settings, reader.name)
        started = time.perf_counter()
        for fetch in fetches(org_id, key_ids, args.events, args.skew, end):
            store.write(fetch, fetch[-1][0])
        filled = time.perf_counter() - started
        with psycopg.connect(env["ICODRIP_DATABASE_URL"], autocommit=True) as conn:
            # Statistics, as autovacuum gathers them within a minute of such a fill (without
            # them the planner reads the minute edges of the totals by the primary key).
            conn.execute("ANALYZE usage_counters")
            by_span: dict[int, int] = dict(
                conn.execute("SELECT span, count(*) FROM usage_counters GROUP BY span").fetchall()
            )
            size = conn.execute("SELECT pg_total_relation_size('usage_counters')").fetchone()
        store.close()
        print(f"filled in {filled:.1f} s", file=sys.stderr)

        common = {"from": rfc3339(start_at), "to": rfc3339(end)}
        reports = UsageReports(registry, reader)
        first = reports.report(
            OPERATOR, org_uuid, UsageWindow.of("minute", start_at, end, now=time.time())
        )
        assert first.next_cursor is not None and len(first.rows) == 1000
        cursor = first.next_cursor
        reads = [
            Read("minute, first page (limit 1000) + totals", {"granularity": "minute"}),
            Read(
                "minute, first page, limit=10000 + totals",
                {"granularity": "minute", "limit": "10000"},
                limit=10_000,
            ),
            Read(
                "minute, second page (cursor) + totals",
                {"granularity": "minute", "cursor": cursor.encode()},
                after=cursor,
            ),
            Read(
                "minute, one key (the busiest) + totals",
                {"granularity": "minute", "key_id": key_ids[0]},
                key_id=key_uuids[0],
            ),
            Read("hour, first page (limit 1000) + totals", {"granularity": "hour"}),
        ]

        results: list[tuple[str, str, str, int]] = []
        for read in reads:
            window = UsageWindow.of(read.params["granularity"], start_at, end, now=time.time())
            report = reports.report(OPERATOR, org_uuid, window, **read.report)

            def call(r: Read = read, w: UsageWindow = window) -> object:
                return reports.report(OPERATOR, org_uuid, w, **r.report)

            samples = timed(call, args.rounds)
            results.append(("in-process `UsageReports.report`", read.name, summary(samples), 0))
            assert report.rows and report.totals.requests > 0

        if not args.no_http:
            cert, cert_key = ensure_self_signed(tmp / "tls")
            port = free_port()
            serve = [str(BIN / "icodrip"), "serve", "--port", str(port)]
            serve += ["--workers", str(args.workers)]
            procs.append(start([*serve, "--certfile", str(cert), "--keyfile", str(cert_key)], env))
            api = f"https://127.0.0.1:{port}"
            wait_ready(api)
            headers = {"Authorization": f"Bearer {secret}"}
            with httpx.Client(base_url=api, verify=False, headers=headers, timeout=30) as client:
                for read in reads:
                    answers: list[httpx.Response] = []
                    params = {**common, **read.params}

                    def get(
                        p: dict[str, str] = params, out: list[httpx.Response] = answers
                    ) -> None:
                        response = client.get("/v1/usage", params=p)
                        if response.status_code != 200:
                            raise RuntimeError(f"{response.status_code}: {response.text[:500]}")
                        response.json()  # parsed, as a client would
                        out.append(response)

                    samples = timed(get, args.rounds)
                    body = answers[-1].json()
                    assert body["object"] == "usage" and body["data"], body
                    assert body["totals"]["requests"] > 0, body["totals"]
                    way = f"HTTPS, `serve --workers {args.workers}`"
                    results.append((way, read.name, summary(samples), len(answers[-1].content)))
                    print(f"  {read.name}: {len(body['data'])} rows", file=sys.stderr)
                if args.profile:
                    target = {**common, **reads[0].params}
                    profile(procs[-1], lambda: client.get("/v1/usage", params=target), args.profile)
        reports.close()
        registry.close()

        minutes, hours, days = (by_span.get(s, 0) for s in (60, 3_600, DAY))
        print()
        print(
            f"Usage reads, one organization with {args.keys:,} keys, {args.events:,} requests "
            f"over 24 h (Zipf {args.skew} over the keys), PostgreSQL, {os.cpu_count()} CPUs, "
            f"{args.rounds} rounds each"
        )
        print()
        print("| the model | |")
        print("|---|---:|")
        print(f"| keys made (registry + key-lookup view), s | {made_keys:.1f} |")
        rate = args.events / filled
        print(f"| filled by `store.write`, s (events/s) | {filled:.1f} ({rate:,.0f}) |")
        print(f"| buckets: minute / hour / day | {minutes:,} / {hours:,} / {days:,} |")
        print(f"| `usage_counters` with its indexes, MB | {(size or [0])[0] / 2**20:,.0f} |")
        print()
        print("| way | read (last 24 h) | median ms | p95 ms | p99 ms | max ms | response bytes |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for way, name, figures, size_bytes in results:
            print(f"| {way} | {name} | {figures} | {f'{size_bytes:,}' if size_bytes else ''} |")
    finally:
        stop(procs)
        if nats_proc is not None:
            nats_proc.terminate()
            nats_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
