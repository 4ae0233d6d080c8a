"""What an `Idempotency-Key` costs a POST, and what a replay costs, on each store of kept answers.

Usage:
    .venv/bin/python bench/idempotency.py [--requests 500] [--store redis|sqlite|both]
        [--redis-url redis://127.0.0.1:6379/0]

One API process in this process (the embedded SQLite key store, no NATS), driven over ASGI by
httpx (no sockets: what is measured is the app, its key gate and the idempotency layer), with
its kept answers in Redis (`--redis-url`, also its rate limiter) or in the data dir's SQLite
file. For each store, `--requests` sequential `POST /v1/affiliates` of one key:

- `none`: without the header (the baseline);
- `new key`: each with a fresh `Idempotency-Key` (claimed, run, sealed, kept);
- `replay`: the same again, each replaying its kept answer (nothing runs).

Printed: requests per second and the p50/p99 latency of each, as a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from adapters.settings import Settings
from api.process import ApiProcess
from bootstrap.api import api_process
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.plans import Plan


async def _timed(client: httpx.AsyncClient, headers: list[dict[str, str]]) -> list[float]:
    took = []
    for each in headers:
        started = time.perf_counter()
        answer = await client.post("/v1/affiliates", json={"name": "bench"}, headers=each)
        took.append(time.perf_counter() - started)
        assert answer.status_code == 201, answer.text
    return took


def _row(store: str, case: str, took: list[float]) -> str:
    ms = sorted(t * 1000 for t in took)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    rate = len(took) / sum(took)
    return f"| {store} | {case} | {rate:,.0f} | {statistics.median(ms):.2f} | {p99:.2f} |"


async def _measure(store: str, requests: int, redis_url: str, data: Path) -> list[str]:
    settings = Settings.from_env(
        {"ICODRIP_DATA_DIR": str(data), "ICODRIP_KEY_PEPPER": "bench-" + uuid.uuid4().hex}
    )
    if store == "redis":
        settings = dataclasses.replace(settings, redis_url=redis_url)
    process: ApiProcess = api_process(settings)
    await process.start()
    try:
        registry = process.services.registry
        org = registry.register_organization("Bench", Plan.AGENCY, OPERATOR)
        registry.set_rate_limit(org.id, 10_000_000, OPERATOR)
        issued = registry.create_key(
            org.id, name="bench", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
        )
        await process.services.mirror.refresh()
        bearer = {"Authorization": f"Bearer {issued.secret}"}
        keyed = [{**bearer, "Idempotency-Key": str(uuid.uuid4())} for _ in range(requests)]
        transport = httpx.ASGITransport(app=process.app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="https://api.bench") as client:
            await _timed(client, [bearer] * 50)  # warm up
            rows = [_row(store, "none", await _timed(client, [bearer] * requests))]
            rows.append(_row(store, "new key", await _timed(client, keyed)))
            rows.append(_row(store, "replay", await _timed(client, keyed)))
        return rows
    finally:
        await process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--store", choices=["redis", "sqlite", "both"], default="both")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    stores = ["redis", "sqlite"] if args.store == "both" else [args.store]
    print("| kept answers in | POST /v1/affiliates | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for store in stores:
        with tempfile.TemporaryDirectory() as data:
            for row in asyncio.run(_measure(store, args.requests, args.redis_url, Path(data))):
                print(row, flush=True)


if __name__ == "__main__":
    main()
