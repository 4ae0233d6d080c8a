"""Python CPU per request on the request path, without the network: CPU µs per request.

What: one API process (`api.process.ApiProcess`, the same app granian serves) driven directly
as an ASGI app, one request at a time, with Redis limits (127.0.0.1:6379) and, with
`--nats`, request events published to a NATS server started from the wheel, by 32
concurrent callers; it counts the process's CPU time, background work included. It isolates the
Python cost of the path (edge, auth, limit, audit, handler, response) from TLS, granian and
the client, so before/after changes show up without the noise of a 2-core load test.
`--profile` prints cProfile's top functions for the authenticated route.

How:

    .venv/bin/python bench/request_path_cpu.py --requests 20000 --nats
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from adapters.logging import configure_logging  # noqa: E402
from adapters.settings import Settings  # noqa: E402
from bootstrap.api import api_process  # noqa: E402
from domain.actors import OPERATOR  # noqa: E402
from domain.key_format import Environment, KeyType  # noqa: E402
from domain.plans import Plan  # noqa: E402


async def request(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8443),
        "state": {},
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def timed(
    app: Any, path: str, headers: list[tuple[bytes, bytes]], n: int, concurrency: int
) -> float:
    """CPU µs of this process per request over `n` requests from `concurrency` callers,
    background work included (request events to NATS, limiter round trips)."""
    for _ in range(200):
        assert await request(app, path, headers) == 200

    async def caller(count: int) -> None:
        for _ in range(count):
            await request(app, path, headers)

    started = time.process_time()
    await asyncio.gather(*(caller(n // concurrency) for _ in range(concurrency)))
    await asyncio.sleep(0.2)  # the last batches of request events go out
    return (time.process_time() - started) / (n // concurrency * concurrency) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--nats", action="store_true", help="publish request events to NATS")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    configure_logging()  # as `bootstrap.asgi` does: 2xx request lines at debug, filtered out

    tmp = Path(tempfile.mkdtemp(prefix="icodrip-cpu-"))
    env = {"ICODRIP_DATA_DIR": str(tmp / "data"), "ICODRIP_REDIS_URL": "redis://127.0.0.1:6379/0"}
    nats = None
    if args.nats:
        port = 4300 + os.getpid() % 1000
        server = str(Path(sys.executable).parent / "nats-server")
        nats = subprocess.Popen(
            [server, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp / "nats")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        env["ICODRIP_NATS_URL"] = f"nats://127.0.0.1:{port}"
        await asyncio.sleep(0.5)
    try:
        process = api_process(Settings.from_env(env))
        registry = process.services.registry
        org = registry.register_organization("Bench", Plan.AGENCY, OPERATOR)
        registry.set_rate_limit(org.id, 10_000_000, OPERATOR)
        issued = registry.create_key(
            org.id, name="bench", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
        )
        await process.start()
        app = process.app
        auth = [(b"authorization", f"Bearer {issued.secret}".encode())]
        base = [(b"host", b"api.test"), (b"user-agent", b"wrk")]
        rows = [
            ("GET /healthz", await timed(app, "/healthz", base, args.requests, args.concurrency)),
            (
                "GET /v1/api-keys/current (key)",
                await timed(
                    app, "/v1/api-keys/current", [*base, *auth], args.requests, args.concurrency
                ),
            ),
        ]
        print(
            f"\n{args.requests} requests each from {args.concurrency} callers, "
            f"NATS {'on' if nats else 'off'}\n"
        )
        print("| route | CPU µs per request |")
        print("|---|---:|")
        for name, micros in rows:
            print(f"| {name} | {micros:.0f} |")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await timed(app, "/v1/api-keys/current", [*base, *auth], 4000, args.concurrency)
            profiler.disable()
            stats = pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_SORT", "tottime"))
            stats.print_stats(os.environ.get("BENCH_FILTER", ""), 35)
            if os.environ.get("BENCH_CALLERS"):
                stats.print_callers(os.environ["BENCH_CALLERS"])
        await process.stop()
    finally:
        if nats is not None:
            nats.terminate()
            nats.wait()


if __name__ == "__main__":
    asyncio.run(main())
