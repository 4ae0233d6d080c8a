"""Are per-key limits exact across API processes? Two processes, twice the limit, at once.

The same scaled-out deployment as `bench/revocation_propagation.py` (its own NATS, a fresh
PostgreSQL database, the machine's Redis, one `icodrip worker`, two `icodrip serve --workers 1`
processes A and B over TLS). For each limit (an agency organization with that custom limit per
minute) and each round: a new key, one warm-up request on each process (both then know the
key; each spends one slot), then 2 x limit concurrent requests alternating between A and B.
Exact means: admitted (warm-ups included) == limit, every other request 429. A round whose
burst crosses a minute boundary (the window turns, counts restart) is discarded and re-run.

Limits of 1000 and more exercise the limiter's leasing (each process takes up to 1 % of the
limit ahead from Redis): never past the limit, but a process may be left holding unused slots
at the end of a window, so admitted may fall short by up to 1 % per process.

    .venv/bin/python bench/limit_exactness.py --limits 100 1000 --rounds 3

Options: --limits N… (100 1000), --rounds N (3), --connections N per process (50),
--postgres-url (default: a PostgreSQL 15 cluster of its own, from /usr/lib/postgresql/15/bin),
--redis-url. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from revocation_propagation import (  # a sibling script, found through sys.path
    Child,
    free_port,
    fresh_database,
    icodrip_json,
    start_deployment,
)

from adapters.embedded_nats import EmbeddedNats

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@contextlib.contextmanager
def private_postgres() -> Iterator[str]:
    """A PostgreSQL 15 cluster of our own on a free port (as the `postgres` user when root):
    the machine's server may be short of connections while others run."""
    root = Path(tempfile.mkdtemp(prefix="icodrip-bench-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    pg_ctl = [*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(root / "data")]
    subprocess.run(
        [
            *as_postgres,
            str(PG_BIN / "initdb"),
            "-D",
            str(root / "data"),
            "-A",
            "trust",
            "-U",
            "postgres",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def minute() -> int:
    return int(time.time()) // 60


def wait_for_room(seconds: float) -> None:
    """Sleep past the next minute boundary if fewer than `seconds` remain before it."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.1)


async def burst(
    urls: list[str], context: ssl.SSLContext, source: str, key: str, total: int, connections: int
) -> tuple[list[int], float]:
    """`total` concurrent GET /v1/affiliates alternating between the URLs: statuses, seconds."""
    headers = {"Authorization": f"Bearer {key}"}
    clients = [
        httpx.AsyncClient(
            base_url=url,
            transport=httpx.AsyncHTTPTransport(
                verify=context,
                local_address=source,
                limits=httpx.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                ),
            ),
            timeout=60,
        )
        for url in urls
    ]
    try:
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(
                clients[i % len(clients)].get("/v1/affiliates", headers=headers)
                for i in range(total)
            ),
            return_exceptions=True,
        )
        elapsed = time.perf_counter() - started
    finally:
        for c in clients:
            await c.aclose()
    return [r.status_code if isinstance(r, httpx.Response) else -1 for r in responses], elapsed


def run(args: argparse.Namespace, workdir: Path, env: dict[str, str], children: list[Child]) -> str:
    orgs: dict[int, str] = {}
    for limit in args.limits:  # the CLI first: it creates the store's tables
        org = icodrip_json(env, "orgs", "create", "--name", f"Limit {limit}", "--plan", "agency")
        icodrip_json(env, "orgs", "set-rate-limit", org["id"], str(limit))
        admin = icodrip_json(env, "keys", "create", "--org", org["id"], "--name", "admin")
        orgs[limit] = admin["key"]
    urls = start_deployment(workdir, env, children)
    context = ssl.create_default_context(cafile=str(workdir / "tls-dir" / "tls" / "cert.pem"))
    source = "127." + ".".join(str(random.randint(1, 254)) for _ in range(3))
    rows = [
        "| limit/min | round | requests (A+B) | admitted | 429 | errors | over | under | s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for limit, admin_key in orgs.items():
        done = 0
        attempts = 0
        while done < args.rounds and attempts < args.rounds + 3:
            attempts += 1
            wait_for_room(args.room)
            with httpx.Client(
                base_url=urls[0],
                transport=httpx.HTTPTransport(verify=context, local_address=source),
                timeout=10,
            ) as http:
                created = http.post(
                    "/v1/api-keys",
                    json={"name": f"burst {done}"},
                    headers={"Authorization": f"Bearer {admin_key}"},
                )
                created.raise_for_status()
                key = created.json()["key"]
            window = minute()
            warm_ups = 0
            for url in urls:  # each process learns the key (one slot each)
                with httpx.Client(
                    base_url=url,
                    transport=httpx.HTTPTransport(verify=context, local_address=source),
                    timeout=10,
                ) as http:
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline:
                        r = http.get("/v1/affiliates", headers={"Authorization": f"Bearer {key}"})
                        if r.status_code == 200:
                            warm_ups += 1
                            break
                        time.sleep(0.02)
            statuses, elapsed = asyncio.run(
                burst(urls, context, source, key, 2 * limit, args.connections)
            )
            if minute() != window:
                print(
                    f"limit {limit}: the window turned mid-burst ({elapsed:.1f} s); again",
                    file=sys.stderr,
                )
                continue
            done += 1
            admitted = statuses.count(200) + warm_ups
            refused = statuses.count(429)
            errors = len(statuses) - statuses.count(200) - refused
            rows.append(
                f"| {limit} | {done} | {2 * limit} + {warm_ups} warm-ups | {admitted} | "
                f"{refused} | {errors} | {max(0, admitted - limit)} | "
                f"{max(0, limit - admitted)} | {elapsed:.1f} |"
            )
    return "\n".join(
        [
            f"2 API processes (granian, 1 worker each), 1 worker, PostgreSQL, NATS, Redis; "
            f"{os.cpu_count()} CPUs; {args.connections} connections per process",
            "",
            *rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limits", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--room", type=float, default=55.0, help="start a burst only this far from a boundary"
    )
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="an admin URL of a server to create the database on (default: a private cluster)",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("ICODRIP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    if not all(1 <= limit <= 5000 for limit in args.limits):
        parser.error("--limits must be 1 to 5000 (the burst is twice the limit)")
    # `timeout`/Ctrl-C: exit through the `finally` blocks, which stop every child we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="icodrip-bench-limits-"))
    children: list[Child] = []
    nats = EmbeddedNats(workdir / "nats")
    failed = True
    try:
        nats.start()
        stream = f"KEYS_BENCH_{uuid.uuid4().hex[:8]}"
        env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("ICODRIP_")}
        env.update(
            PYTHONUNBUFFERED="1",
            ICODRIP_NATS_URL=nats.url,
            ICODRIP_REDIS_URL=args.redis_url,
            ICODRIP_KEY_PEPPER="bench-pepper-" + uuid.uuid4().hex,
            ICODRIP_KEYS_STREAM=stream,
            ICODRIP_KEYS_SUBJECT=f"bench.{stream.lower()}",
        )
        with contextlib.ExitStack() as stack:
            admin_url = args.postgres_url or stack.enter_context(private_postgres())
            database_url = stack.enter_context(fresh_database(admin_url))
            try:
                report = run(args, workdir, {**env, "ICODRIP_DATABASE_URL": database_url}, children)
            finally:
                for child in reversed(children):
                    child.stop()
        print(report)
        failed = False
    finally:
        for child in reversed(children):
            child.stop()
        nats.stop()
        if failed:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
