"""What checking a pooled PostgreSQL connection before use costs (ADR 0015).

Usage:
    .venv/bin/python bench/pool_check.py [--checkouts 20000] [--rounds 7]
                                         [--url postgresql://postgres@127.0.0.1:5432/postgres]

Prints µs per checkout (`with pool.connection(): pass`, one connection, no query) for:
- psycopg_pool with no check (what the stores had before);
- `checked_pool`: the socket poll of `adapters.postgres_pools` (no round trip);
- psycopg_pool's `check_connection`, an empty query per checkout (`POSTGRES_PRE_PING`);
then the poll alone, and how many checkouts each store route takes (an API process on a fresh
database of that server, 50 requests per route), so the cost per request can be read off.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from adapters import postgres_pools
from adapters.postgres_pools import checked_pool, raise_if_dead

ROUTES: list[tuple[str, str, object | None]] = [
    ("GET", "/v1/affiliates", None),
    ("POST", "/v1/affiliates", {"name": "bench"}),
    ("GET", "/v1/api-keys", None),
    ("GET", "/v1/api-keys/{key_id}", None),
    ("GET", "/v1/api-keys/{key_id}/history", None),
    ("GET", "/v1/audit/requests?limit=5", None),
    ("POST", "/v1/events", {"event": "bench"}),
    ("POST", "/v1/api-keys", {"name": "bench"}),
    ("GET", "/v1/api-keys/current", None),
]


def per_checkout(make: Callable[[], ConnectionPool[Any]], checkouts: int) -> float:
    with make() as pool:
        pool.wait()
        for _ in range(1000):
            with pool.connection():
                pass
        started = time.perf_counter()
        for _ in range(checkouts):
            with pool.connection():
                pass
        return (time.perf_counter() - started) / checkouts * 1e6


async def checkouts_per_route(url: str) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from adapters.logging import configure_logging
    from adapters.settings import Settings
    from bootstrap.api import api_process
    from domain.actors import OPERATOR
    from domain.ids import format_key_id
    from domain.plans import Plan
    from support.api import bearer, serving

    configure_logging("error", json=False)  # not a line per request
    calls = [0]
    check = postgres_pools.DeadConnectionCheck.__call__

    def counting(self: postgres_pools.DeadConnectionCheck, conn: Any) -> None:
        calls[0] += 1
        check(self, conn)

    postgres_pools.DeadConnectionCheck.__call__ = counting  # type: ignore[method-assign]
    name = f"icodrip_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    counts: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as data:
            settings = Settings.from_env(
                {
                    "ICODRIP_DATA_DIR": f"{data}/data",
                    "ICODRIP_DATABASE_URL": f"{url.rsplit('/', 1)[0]}/{name}",
                    "ICODRIP_KEY_PEPPER": "bench-pepper-" + uuid.uuid4().hex,
                    "ICODRIP_KEYS_STREAM": f"BENCH_{uuid.uuid4().hex[:8]}",
                }
            )
            async with serving(api_process(settings)) as api:
                org = api.org(Plan.AGENCY)
                api.registry.set_rate_limit(org.id, 1_000_000, OPERATOR)
                key = await api.key(org)
                for method, route, body in ROUTES:
                    path = route.format(key_id=format_key_id(key.key.id))
                    for n in (5, 50):  # warm up, then count
                        calls[0] = 0
                        for _ in range(n):
                            response = await api.client.request(
                                method, path, json=body, headers=bearer(key)
                            )
                            assert response.status_code < 400, response.text
                    counts[f"{method} {route.split('?')[0]}"] = calls[0] / 50
    finally:
        postgres_pools.DeadConnectionCheck.__call__ = check  # type: ignore[method-assign]
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkouts", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    url = args.url

    kinds: dict[str, Callable[[], ConnectionPool[Any]]] = {
        "no check": lambda: ConnectionPool(url, min_size=1, max_size=1, open=True),
        "checked_pool (poll)": lambda: checked_pool(url, min_size=1, max_size=1, open=True),
        "check_connection (pre-ping)": lambda: ConnectionPool(
            url, min_size=1, max_size=1, open=True, check=ConnectionPool.check_connection
        ),
    }
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):  # interleaved, so load on the machine hits all alike
        for kind, make in kinds.items():
            results[kind].append(per_checkout(make, args.checkouts))
    for kind, values in results.items():
        print(
            f"{kind:30s} {statistics.median(values):6.1f} µs/checkout median "
            f"(min {min(values):.1f}, max {max(values):.1f}, {args.rounds} rounds)"
        )

    with psycopg.connect(url, autocommit=True) as conn:
        n = 200_000
        started = time.perf_counter()
        for _ in range(n):
            raise_if_dead(conn)
        print(f"{'the poll alone':30s} {(time.perf_counter() - started) / n * 1e6:6.2f} µs")

    for route, count in asyncio.run(checkouts_per_route(url)).items():
        print(f"{route:50s} {count:4.1f} checkouts/request")


if __name__ == "__main__":
    main()
