"""Throughput and latency of the full auth path vs the same route with auth switched off.

What: `GET /v1/affiliates` served by granian (same worker count) in two configurations —
(A) the product: edge layer + Bearer auth + per-key Redis rate limit + request event on
JetStream; (B) bench/unauthenticated.py: the same handler and services, no auth, no limit, no
event. Both are plain HTTP behind a "trusted proxy" (wrk sends X-Forwarded-Proto: https), so
TLS cost is excluded from both alike. Runs alternate A, B, A, B… and the table reports each.

How (needs wrk: `apt-get install -y wrk`; PostgreSQL and Redis on 127.0.0.1):

    .venv/bin/python bench/api_throughput.py --duration 10 --connections 32 --workers 2 --rounds 2

It starts its own NATS server from the wheel, a fresh PostgreSQL database, one
`icodrip worker` (unless `--no-worker`: on a 2-core machine the audit pipeline's ingestion
competes with the API for the same cores; in production it runs elsewhere), and the two
servers; everything is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


_TAKEN: set[int] = set()


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768+), never handed out twice.

    A port the kernel picks (bind to 0) is an ephemeral one: between this check and the
    server's own bind, the worker's outgoing connections may take it, and the server fails.
    """
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 32_000)
        if port in _TAKEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _TAKEN.add(port)
        return port


def wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server on {port} not ready")


def wrk(port: int, key: str, duration: int, connections: int) -> tuple[float, str, str]:
    result = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {key}",
            "-H",
            "X-Forwarded-Proto: https",
            f"http://127.0.0.1:{port}/v1/affiliates",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    out = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} failed responses:\n{out}")
    return rps, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run `icodrip worker` on this machine meanwhile (A still publishes every "
        "request event to JetStream; ingesting them into the audit model waits)",
    )
    args = parser.parse_args()

    db = f"icodrip_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    tmp = Path(tempfile.mkdtemp(prefix="icodrip-bench-"))
    nats_port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        nats_conf = tmp / "nats.conf"
        nats_conf.write_text(f'jetstream {{ store_dir: "{tmp / "nats"}" }}\n')
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "nats-server"),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(nats_port),
                    "-c",
                    str(nats_conf),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        env = {
            **os.environ,
            "ICODRIP_DATA_DIR": str(tmp / "data"),
            "ICODRIP_DATABASE_URL": f"{ADMIN_URL.rsplit('/', 1)[0]}/{db}",
            "ICODRIP_NATS_URL": f"nats://127.0.0.1:{nats_port}",
            "ICODRIP_REDIS_URL": "redis://127.0.0.1:6379/0",
            "ICODRIP_KEY_PEPPER": "bench-pepper-" + uuid.uuid4().hex,
            "ICODRIP_TRUSTED_PROXIES": "127.0.0.1/32",
        }
        time.sleep(0.5)

        def icodrip(*a: str) -> dict:  # type: ignore[type-arg]
            out = subprocess.run(
                [str(BIN / "icodrip"), *a, "--json"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            return json.loads(out)  # type: ignore[no-any-return]

        org = icodrip("orgs", "create", "--name", "Bench", "--plan", "agency")
        icodrip("orgs", "set-rate-limit", org["id"], "10000000")
        key = icodrip("keys", "create", "--org", org["id"], "--name", "bench")
        env["BENCH_KEY_ID"] = key["id"]
        if not args.no_worker:
            procs.append(
                subprocess.Popen(
                    [str(BIN / "icodrip"), "worker"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        ports = {"A: auth + limit + audit": free_port(), "B: auth disabled": free_port()}
        targets = {
            "A: auth + limit + audit": "api.asgi:app",
            "B: auth disabled": "unauthenticated:app",
        }
        for name, port in ports.items():
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "granian"),
                        "--interface",
                        "asgi",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--workers",
                        str(args.workers),
                        "--log-level",
                        "warning",
                        targets[name],
                    ],
                    env={**env, "PYTHONPATH": str(ROOT / "bench")},
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in ports.values():
            wait_ready(port)
        for port in ports.values():  # warm up
            wrk(port, key["key"], 2, args.connections)

        rows = []
        for round_ in range(1, args.rounds + 1):
            for name, port in ports.items():
                rps, p50, p99 = wrk(port, key["key"], args.duration, args.connections)
                rows.append((round_, name, rps, p50, p99))
        print(
            f"\nwrk -t2 -c{args.connections} -d{args.duration}s, granian --workers {args.workers}, "
            f"{os.cpu_count()} cores, audit worker "
            f"{'not running' if args.no_worker else 'running on the same cores'}\n"
        )
        print("| round | server | req/s | p50 | p99 |")
        print("|---|---|---:|---:|---:|")
        for round_, name, rps, p50, p99 in rows:
            print(f"| {round_} | {name} | {rps:,.0f} | {p50} | {p99} |")
        a = sum(r[2] for r in rows if r[1].startswith("A")) / args.rounds
        b = sum(r[2] for r in rows if r[1].startswith("B")) / args.rounds
        print(f"\nA / B = {a:,.0f} / {b:,.0f} req/s = {100 * a / b:.0f} %")
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
