"""Throughput and latency of the request path: authenticated routes vs `GET /healthz`.

What (issue 11's measure): ONE server, `icodrip serve --workers N` terminating TLS itself,
with Redis limits, request events on JetStream (durable in the per-process audit log before
each response) and the embedded store or PostgreSQL; wrk `-t1 -cC` over HTTPS, rounds
alternating between

- `GET /healthz` (no key: the floor every route pays),
- `GET /v1/api-keys/current` with a valid key (auth + limit + audit, no store read),
- `GET /v1/affiliates` with a valid key (the same plus one indexed read),

and, on a second server (bench/unauthenticated.py: same handlers and services, no edge, no
auth, no limit, no event), `GET /v1/affiliates` without a key. The table reports each round
and the share of `/healthz` (and of unauthenticated affiliates) averaged over rounds.

How (needs wrk: `apt-get install -y wrk`; PostgreSQL and Redis on 127.0.0.1):

    .venv/bin/python bench/api_throughput.py --duration 10 --connections 32 --workers 2 --rounds 3

It starts its own NATS server from the wheel, a fresh PostgreSQL database, one
`icodrip worker` (unless `--no-worker`: on a 2-core machine the audit pipeline's ingestion
competes with the API for the same cores; in production it runs elsewhere), and the two
servers; everything is stopped at the end (each server's process group).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import socket
import ssl
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


def wait_ready(url: str, timeout: float = 30.0) -> None:
    context = ssl._create_unverified_context()  # the bench's own self-signed certificate
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1, context=context) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server at {url} not ready")


def wrk(url: str, key: str | None, duration: int, connections: int) -> tuple[float, str, str]:
    """(req/s, p50, p99) of `url`; any non-2xx response fails the run."""
    auth = ["-H", f"Authorization: Bearer {key}"] if key else []
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", *auth, url],
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
        raise RuntimeError(f"{non2xx.group(1)} failed responses from {url}:\n{out}")
    return rps, p50, p99


def profile(
    server: subprocess.Popen[bytes], url: str, key: str, duration: int, connections: int
) -> None:
    """Where one API worker spends its time under load on `url`: py-spy's inclusive shares."""
    workers = subprocess.run(
        ["pgrep", "-P", str(server.pid)], capture_output=True, text=True
    ).stdout.split()
    out = Path(tempfile.mkdtemp(prefix="icodrip-profile-")) / "stacks.txt"
    record = ["record", "--format", "raw", "--rate", "250", "--nonblocking"]
    spy = subprocess.Popen(
        [str(BIN / "py-spy"), *record, "-d", str(duration), "-o", str(out), "-p", workers[0]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    wrk(url, key, duration, connections)
    spy.wait()
    inclusive: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        seen = set()
        for frame in stack.split(";"):
            name = frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1].split(":")[0].rstrip(")")
            if name not in seen:
                seen.add(name)
                inclusive[name] = inclusive.get(name, 0) + int(count)
    print(f"\npy-spy, one worker, {total} samples (raw stacks: {out})\n")
    print("| function | inclusive |")
    print("|---|---:|")
    for name, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:40]:
        print(f"| `{name}` | {100 * count / total:.1f} % |")


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A process in a group of its own, so that stopping it stops its workers too."""
    return subprocess.Popen(
        cmd,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="the event store and read models: the embedded default or PostgreSQL",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the rounds, profile one API worker (py-spy) under load on "
        "/v1/api-keys/current and print the inclusive time per function",
    )
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run `icodrip worker` on this machine meanwhile (the API still publishes "
        "every request event to JetStream; ingesting them into the audit model waits)",
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
            start(
                [
                    str(BIN / "nats-server"),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    f"{nats_port}",
                    "-c",
                    f"{nats_conf}",
                ],
                dict(os.environ),
            )
        )
        env = {
            **os.environ,
            "ICODRIP_DATA_DIR": str(tmp / "data"),
            "ICODRIP_NATS_URL": f"nats://127.0.0.1:{nats_port}",
            "ICODRIP_REDIS_URL": "redis://127.0.0.1:6379/0",
            "ICODRIP_KEY_PEPPER": "bench-pepper-" + uuid.uuid4().hex,
        }
        if args.store == "postgres":
            env["ICODRIP_DATABASE_URL"] = f"{ADMIN_URL.rsplit('/', 1)[0]}/{db}"
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
        created = icodrip("keys", "create", "--org", org["id"], "--name", "bench")
        key, env["BENCH_KEY_ID"] = created["key"], created["id"]
        if not args.no_worker:
            procs.append(start([str(BIN / "icodrip"), "worker"], env))
        sys.path.insert(0, str(ROOT / "src"))
        from adapters.tls import ensure_self_signed

        cert, cert_key = ensure_self_signed(tmp / "tls")
        port, bare_port = free_port(), free_port()
        serve = [str(BIN / "icodrip"), "serve", "--port", str(port), "--workers", str(args.workers)]
        server = start([*serve, "--certfile", str(cert), "--keyfile", str(cert_key)], env)
        procs.append(server)
        procs.append(
            start(
                [
                    *(str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1"),
                    *("--port", str(bare_port), "--workers", str(args.workers)),
                    *("--ssl-certificate", str(cert), "--ssl-keyfile", str(cert_key)),
                    *("--log-level", "warning", "unauthenticated:app"),
                ],
                {**env, "PYTHONPATH": str(ROOT / "bench")},
            )
        )
        api, bare = f"https://127.0.0.1:{port}", f"https://127.0.0.1:{bare_port}"
        wait_ready(api)
        wait_ready(bare)
        targets: list[tuple[str, str, str | None]] = [
            ("GET /healthz", f"{api}/healthz", None),
            ("GET /v1/api-keys/current (key)", f"{api}/v1/api-keys/current", key),
            ("GET /v1/affiliates (key)", f"{api}/v1/affiliates", key),
            ("GET /v1/affiliates (no auth server)", f"{bare}/v1/affiliates", None),
        ]
        for _, url, k in targets:  # warm up
            wrk(url, k, 2, args.connections)

        rows = []
        for round_ in range(1, args.rounds + 1):
            for name, url, k in targets:
                rps, p50, p99 = wrk(url, k, args.duration, args.connections)
                rows.append((round_, name, rps, p50, p99))
        print(
            f"\nwrk -t1 -c{args.connections} -d{args.duration}s over TLS, icodrip serve "
            f"--workers {args.workers}, {args.store} store, {os.cpu_count()} cores, audit worker "
            f"{'not running' if args.no_worker else 'running on the same cores'}\n"
        )
        print("| round | route | req/s | p50 | p99 |")
        print("|---|---|---:|---:|---:|")
        for round_, name, rps, p50, p99 in rows:
            print(f"| {round_} | {name} | {rps:,.0f} | {p50} | {p99} |")
        mean = {
            name: sum(r[2] for r in rows if r[1] == name) / args.rounds for name, _, _ in targets
        }
        floor = mean["GET /healthz"]
        print()
        for name, _, _ in targets[1:]:
            print(f"{name}: {mean[name]:,.0f} req/s = {100 * mean[name] / floor:.0f} % of /healthz")
        bare_mean = mean["GET /v1/affiliates (no auth server)"]
        with_auth = mean["GET /v1/affiliates (key)"]
        print(f"affiliates with auth / without: {100 * with_auth / bare_mean:.0f} %")
        if args.profile:
            profile(server, targets[1][1], key, args.duration, args.connections)
    finally:
        stop(procs)
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
