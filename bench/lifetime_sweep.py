"""What the lifetime sweep costs: its start (folding the key store's log) and one pass.

Usage:
    .venv/bin/python bench/lifetime_sweep.py [--keys 5000] [--store sqlite|postgres]
        [--postgres-admin-url postgresql://127.0.0.1:5432/postgres]

One organization with `revoke_unused_after` = 90 days and `--keys` live keys on the embedded
SQLite store (or a fresh PostgreSQL schema), half of them used (one request event each in the
request-audit model, a day before the sweep's clock). Then, on a clock 85 days ahead (every
unused key inside its warning window):

- `fold`: a new sweep reads the whole log (`catch_up`), as `icodrip worker lifetimes` does at
  start;
- `warning the unused`: the passes (at most `UNUSED_ACTIONS_PER_PASS` warnings each) that read
  every candidate's last use and warn the unused half, one stored event per key;
- `pass: nothing due`: the next pass, which reads every last use and finds nothing to do (what
  the sweep does every minute);
- `pass: rolled keys only`: a pass that looks only at rolled keys (every 5 s), none here.

Printed: seconds and keys per second of each, as a markdown table.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import psycopg
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from adapters.request_events import RequestEvent, RequestEventBatch, new_event_id
from adapters.settings import Settings
from application.key_lifetimes import KeyLifetimes
from application.stores import open_registry
from domain.actors import OPERATOR
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment, KeyType
from domain.lifetime_policy import LifetimePolicy
from domain.plans import Plan
from projections.request_audit_query import Message
from projections.request_audit_store import open_request_audit_store
from workers.key_lifetimes import LifetimeSweep

#: The sweep's clock: 85 days after the keys were made (inside a 90-day rule's warning window).
AHEAD = timedelta(days=85)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=5000)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-admin-url", default="postgresql://127.0.0.1:5432/postgres")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as data_dir:
        env = {"ICODRIP_DATA_DIR": data_dir, "ICODRIP_KEY_PEPPER": uuid.uuid4().hex * 2}
        if args.store == "sqlite":
            run(Settings.from_env(env), args)
            return
        database = f"bench_lifetimes_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres_admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        try:
            url = args.postgres_admin_url.rsplit("/", 1)[0] + f"/{database}"
            run(Settings.from_env({**env, "ICODRIP_DATABASE_URL": url}), args)
        finally:
            with psycopg.connect(args.postgres_admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


def run(settings: Settings, args: argparse.Namespace) -> None:
    registry = open_registry(settings)
    audit = open_request_audit_store(settings)
    org = registry.register_organization("Bench", Plan.PRO, OPERATOR)
    KeyLifetimes(registry).set_policy(
        OPERATOR, org.id, LifetimePolicy(revoke_unused_after=timedelta(days=90))
    )
    started = time.perf_counter()
    events = []
    for n in range(args.keys):
        key = registry.create_key(
            org.id, name=f"k{n}", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
        ).key
        if n % 2 == 0:
            events.append(request_event(format_key_id(key.id), format_org_id(org.id), key.hint))
    for seq, start in enumerate(range(0, len(events), 500), start=1):
        batch = RequestEventBatch(events=events[start : start + 500])
        audit.ingest([Message(seq, msgspec.json.encode(batch))])
    print(f"set up {args.keys} keys in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    registry.clock = lambda: datetime.now(UTC) + AHEAD
    sweep = LifetimeSweep(registry, audit.last_used)
    rows = [("fold (start)", *timed(sweep.catch_up))]
    passes, warned, spent = 0, 0, 0.0
    while True:
        seconds, acted = timed(lambda: sweep.run_once(audit_current=True).warned)
        if not acted:
            break
        passes, warned, spent = passes + 1, warned + acted, spent + seconds
    rows.append((f"warning the unused ({passes} passes)", spent, warned))
    rows.append(("pass: nothing due (every minute)", seconds, 0))
    idle_only = timed(lambda: sweep.run_once(audit_current=True, unused=False).warned)
    rows.append(("pass: rolled keys only (every 5 s)", *idle_only))
    print(f"\n{args.keys} keys, {args.store}:\n")
    print("| step | seconds | keys/s | acted on |")
    print("|---|---:|---:|---:|")
    for name, seconds, acted in rows:
        print(f"| {name} | {seconds:.3f} | {args.keys / seconds:,.0f} | {acted} |")
    audit.close()
    registry.close()


def timed(step: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    result = step()
    return time.perf_counter() - started, result


def request_event(key_id: str, org_id: str, hint: str) -> RequestEvent:
    return RequestEvent(
        id=new_event_id(),
        request_id=new_event_id(),
        key_id=key_id,
        key_hint=hint,
        org_id=org_id,
        env="live",
        method="GET",
        route="/v1/affiliates",
        path="/v1/affiliates",
        status=200,
        client_addr="203.0.113.9",
        user_agent="bench/1.0",
        latency_ms=1.0,
        occurred_at=(datetime.now(UTC) + AHEAD - timedelta(days=1)).timestamp(),
    )


if __name__ == "__main__":
    main()
