"""Audit ingestion rate: request events on JetStream → the request-audit model on PostgreSQL.

Usage:
    .venv/bin/python bench/audit_ingest.py [--events 1000000] [--per-message 256]
        [--fetch 256] [--orgs 50] [--keys-per-org 20]
        [--postgres-admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--keep]

Bounded: starts a fresh `nats-server` from the pinned wheel (JetStream file storage in a temp
dir, `sync_interval: always` like `icodrip dev`) and creates a fresh PostgreSQL database
(dropped afterwards unless `--keep`). Then:

1. publishes `--events` request events (realistic field sizes, `--orgs` organizations with
   `--keys-per-org` keys each, some 401s without an org) as batches of `--per-message` events,
   one JetStream message per batch with its `Nats-Msg-Id`, as the API's publisher does;
2. runs the audit-ingest worker's consumer (`AuditIngester`, the code `icodrip worker audit`
   runs) against the full stream until nothing is pending: that is the measured ingestion;
3. checks the row count and verifies every hash chain (also timed).

Prints a markdown table. Publishing happens before ingestion, so the figure is the ingest
rate alone, with a backlog to drain (the worst case: a worker catching up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
import nats
import psycopg

from adapters.embedded_nats import nats_server_binary
from adapters.request_events import (
    REQUESTS_SUBJECT,
    RequestEvent,
    RequestEventBatch,
    batch_msg_id,
    ensure_audit_stream,
    new_event_id,
)
from adapters.settings import Settings
from projections.request_audit_store import open_request_audit_store
from workers.audit_ingest import AuditIngester, AuditIngestSettings

ROUTES = [("GET", "/v1/affiliates"), ("POST", "/v1/affiliates"), ("GET", "/v1/api-keys")]
AGENTS = ["python-httpx/0.27.0", "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "curl/8"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nats(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "nats.conf"
    config.write_text(f'jetstream {{\n  store_dir: "{directory}"\n  sync_interval: always\n}}\n')
    proc = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return proc, f"nats://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("nats-server did not start")


def make_events(count: int, orgs: int, keys_per_org: int) -> list[RequestEvent]:
    org_ids = [f"org_{uuid.uuid4().hex}" for _ in range(orgs)]
    keys = [(o, f"key_{uuid.uuid4().hex}") for o in org_ids for _ in range(keys_per_org)]
    now = time.time()
    events = []
    for i in range(count):
        unknown = i % 50 == 49
        org, key = (None, None) if unknown else random.choice(keys)
        method, route = random.choice(ROUTES)
        events.append(
            RequestEvent(
                id=new_event_id(),
                request_id=new_event_id(),
                key_id=key,
                key_hint=f"ak_live_…{random.randrange(16**4):04x}",
                org_id=org,
                env=None if unknown else "live",
                method=method,
                route=route,
                path=route if method == "POST" else f"{route}?limit=20",
                status=401 if unknown else random.choice((200, 200, 200, 201, 403, 429)),
                client_addr=f"203.0.113.{random.randrange(1, 255)}",
                user_agent=random.choice(AGENTS),
                latency_ms=random.uniform(0.3, 25.0),
                occurred_at=now + i * 1e-4,
            )
        )
    return events


async def publish(url: str, events: list[RequestEvent], per_message: int) -> float:
    client = await nats.connect(url)
    encoder = msgspec.json.Encoder()
    try:
        js = client.jetstream()
        await ensure_audit_stream(js)
        started = time.perf_counter()
        window: list[asyncio.Future[object]] = []
        for start in range(0, len(events), per_message):
            batch = events[start : start + per_message]
            payload = encoder.encode(RequestEventBatch(events=batch))
            window.append(
                asyncio.ensure_future(
                    js.publish(
                        REQUESTS_SUBJECT,
                        payload,
                        headers={"Nats-Msg-Id": batch_msg_id(batch)},
                        timeout=30,
                    )
                )
            )
            if len(window) >= 64:
                await asyncio.gather(*window)
                window.clear()
        await asyncio.gather(*window)
        return time.perf_counter() - started
    finally:
        await client.close()


async def ingest(url: str, settings: Settings, fetch: int, total: int) -> float:
    store = open_request_audit_store(settings)
    last = [time.perf_counter(), 0]
    committed = [0.0]
    ingester: AuditIngester

    def progress(_: object) -> None:
        now = committed[0] = time.perf_counter()
        if now - last[0] >= 2.0:
            done = ingester.counters.inserted
            rate = (done - last[1]) / (now - last[0])
            print(f"  … {done:,}/{total:,} events, {rate:,.0f}/s", file=sys.stderr)
            last[0], last[1] = now, done

    ingester = AuditIngester(
        store, url, AuditIngestSettings(batch=fetch, ack_wait=120), on_commit=progress
    )
    try:
        started = time.perf_counter()
        await ingester.run_until_caught_up(timeout=3600)
        return committed[0] - started  # to the last commit (not the final empty fetch)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--per-message", type=int, default=256)
    parser.add_argument("--fetch", type=int, default=256, help="messages per fetch")
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--keys-per-org", type=int, default=20)
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "ICODRIP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and NATS dir")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="icodrip-bench-audit-"))
    db = f"icodrip_bench_audit_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    db_url = f"{args.postgres_admin_url.rsplit('/', 1)[0]}/{db}"
    nats_proc: subprocess.Popen[bytes] | None = None
    try:
        nats_proc, nats_url = start_nats(workdir / "nats")
        settings = Settings(
            data_dir=workdir / "data", database_url=db_url, nats_url=nats_url, key_pepper=b"b" * 32
        )
        print(f"generating {args.events:,} events…", file=sys.stderr)
        events = make_events(args.events, args.orgs, args.keys_per_org)
        print("publishing…", file=sys.stderr)
        published = asyncio.run(publish(nats_url, events, args.per_message))
        del events
        print("ingesting…", file=sys.stderr)
        ingested = asyncio.run(ingest(nats_url, settings, args.fetch, args.events))
        store = open_request_audit_store(settings)
        try:
            rows = store.count()
            started = time.perf_counter()
            reports = store.verify()
            verified = time.perf_counter() - started
        finally:
            store.close()
        intact = all(r.broken is None for r in reports)
        messages = -(-args.events // args.per_message)
        print()
        print(f"Audit ingestion, {args.events:,} request events, PostgreSQL, {os.cpu_count()} CPUs")
        print()
        print("| step | events | time (s) | events/s |")
        print("|---|---:|---:|---:|")
        print(
            f"| publish ({messages:,} messages of {args.per_message}) | {args.events:,} "
            f"| {published:.1f} | {args.events / published:,.0f} |"
        )
        print(
            f"| **ingest** (fetch {args.fetch} messages, one transaction each) | {rows:,} "
            f"| {ingested:.1f} | **{rows / ingested:,.0f}** |"
        )
        print(
            f"| verify all chains ({len(reports)} chains, intact: {intact}) | {rows:,} "
            f"| {verified:.1f} | {rows / verified:,.0f} |"
        )
        if rows != args.events or not intact:
            print(f"\nMISMATCH: {rows} rows for {args.events} events, intact={intact}")
            sys.exit(1)
    finally:
        if nats_proc is not None:
            nats_proc.terminate()
            nats_proc.wait(10)
        if args.keep:
            print(f"\nkept: {db_url} and {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            with psycopg.connect(args.postgres_admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
