"""A whole deployment on throwaway servers that tests may crash: PostgreSQL 15 (a cluster of its
own), NATS JetStream, Redis, one `icodrip worker` and one `icodrip serve` over TLS; plus a
steady, bounded request load that records every response it got.

Never touches the machine's shared PostgreSQL, Redis or NATS: every server here is started on
a free port with a directory of its own, and stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from adapters.settings import Settings
from application.stores import open_registry
from domain.actors import OPERATOR
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment, KeyType
from domain.plans import Plan
from e2e.harness import (
    Child,
    Children,
    Pki,
    async_client,
    bearer,
    child_env,
    client,
    loopback_address,
    trusting,
    wait_ready,
)
from support.postgres_cluster import PostgresCluster
from support.servers import NatsServer, RedisServer, free_port


@dataclass
class Stack:
    pki: Pki
    root: Path
    postgres: PostgresCluster
    nats: NatsServer
    redis: RedisServer
    children: Children
    env: dict[str, str]
    url: str = ""
    port: int = 0
    admin_key: str = ""
    org_id: str = ""
    limited_org_id: str = ""
    limited_admin_key: str = ""
    source: str = field(default_factory=loopback_address)
    worker: Child | None = None
    serve: Child | None = None
    serves: int = 0
    created: dict[str, str] = field(default_factory=dict)
    """Every key made during the run that got its 201: id → secret."""
    revoked: set[str] = field(default_factory=set)

    def http(self) -> httpx.Client:
        return client(self.url, trusting(self.pki.ca_cert), local_address=self.source)

    def async_http(self, connections: int = 16) -> httpx.AsyncClient:
        return async_client(
            self.url,
            trusting(self.pki.ca_cert),
            local_address=self.source,
            connections=connections,
            timeout=30.0,
        )

    def start_worker(self) -> Child:
        self.worker = self.children.start("worker", self.env, "worker")
        self.worker.wait_for_output("key_lookup.started", timeout=60)
        return self.worker

    def start_serve(self, workers: int = 1, name: str | None = None) -> Child:
        """An API process on the stack's port (the same one after a restart); its data dir is
        its `name`'s, a new one per start unless a name is given again."""
        self.serves += 1
        self.serve = self.children.start(
            name or f"serve-{self.serves}",
            self.env,
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--certfile",
            str(self.pki.server_cert),
            "--keyfile",
            str(self.pki.server_key),
        )
        with self.http() as http:
            wait_ready(http, self.serve, timeout=60)
        return self.serve

    def create_key(self, name: str, admin_key: str | None = None) -> dict[str, object]:
        with self.http() as http:
            response = http.post(
                "/v1/api-keys", json={"name": name}, headers=bearer(admin_key or self.admin_key)
            )
        assert response.status_code == 201, response.text
        if admin_key is None:  # a key of the main organization
            self.created[response.json()["id"]] = response.json()["key"]
        return response.json()  # type: ignore[no-any-return]

    # -- the audit model ---------------------------------------------------------------------

    def audit_counts(self, request_ids: Iterable[str]) -> Counter[str]:
        """Audit rows per request id (absent = none)."""
        ids = list(set(request_ids))
        with psycopg.connect(self.postgres.url, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT request_id, count(*) FROM requestaudit_rows "
                "WHERE request_id = ANY(%s) GROUP BY request_id",
                [ids],
            ).fetchall()
        return Counter({request_id: int(n) for request_id, n in rows})

    def wait_until_audited(self, request_ids: Iterable[str], timeout: float = 60.0) -> Counter[str]:
        """Poll until every request id has a row (or the time is up); the counts then."""
        ids = set(request_ids)
        deadline = time.monotonic() + timeout
        counts: Counter[str] = Counter()
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.OperationalError):
                counts = self.audit_counts(ids)
                if len(counts) == len(ids):
                    time.sleep(1.0)  # and then a little longer: a duplicate would show now
                    return self.audit_counts(ids)
            time.sleep(0.3)
        return counts


def start_stack(pki: Pki, root: Path) -> Stack:
    postgres = PostgresCluster()
    postgres.start()
    nats = NatsServer(root / "nats")
    nats.start()
    redis = RedisServer()
    redis.start()
    stream = f"KEYS_FAULTS_{uuid.uuid4().hex[:8]}"
    env = child_env(
        ICODRIP_DATABASE_URL=postgres.url,
        ICODRIP_NATS_URL=nats.url,
        ICODRIP_REDIS_URL=redis.url,
        ICODRIP_KEY_PEPPER="faults-pepper-" + uuid.uuid4().hex,
        ICODRIP_KEYS_STREAM=stream,
        ICODRIP_KEYS_SUBJECT=f"faults.{stream.lower()}",
        # A batch a killed worker held is redelivered after this many seconds (default 30).
        ICODRIP_AUDIT_ACK_WAIT="3",
    )
    stack = Stack(
        pki=pki,
        root=root,
        postgres=postgres,
        nats=nats,
        redis=redis,
        children=Children(root / "children"),
        env=env,
        port=free_port(),
    )
    stack.url = f"https://127.0.0.1:{stack.port}"
    # The organizations and first keys straight through the registry (the CLI is tested
    # elsewhere; here it would only add process start-ups).
    registry = open_registry(Settings.from_env({**env, "ICODRIP_DATA_DIR": str(root / "setup")}))
    try:
        org = registry.register_organization("Faults", Plan.AGENCY, OPERATOR)
        registry.set_rate_limit(org.id, 100_000, OPERATOR)
        limited = registry.register_organization("Limited", Plan.AGENCY, OPERATOR)
        registry.set_rate_limit(limited.id, 5, OPERATOR)
        admin, limited_admin = (
            registry.create_key(
                org_id, name="admin", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
            )
            for org_id in (org.id, limited.id)
        )
    finally:
        registry.close()
    stack.org_id, stack.admin_key = format_org_id(org.id), admin.secret
    stack.limited_org_id = format_org_id(limited.id)
    stack.limited_admin_key = limited_admin.secret
    stack.created[format_key_id(admin.key.id)] = admin.secret
    stack.start_worker()
    stack.start_serve()
    return stack


def stop_stack(stack: Stack) -> None:
    stack.children.stop_all()
    stack.redis.stop()
    stack.nats.stop()
    print(stack.postgres.log()[-3000:])
    stack.postgres.remove()


# -- steady load ---------------------------------------------------------------------------


@dataclass
class Outcome:
    request_id: str
    status: int
    code: str | None
    at: float


@dataclass
class Load:
    """`concurrency` loops of GET /v1/affiliates with `keys`, each a request at a time, until
    stopped; every response is recorded, every transport error counted."""

    stack: Stack
    keys: list[str]
    concurrency: int = 4
    pause: float = 0.01
    outcomes: list[Outcome] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Load:
        self._client = self.stack.async_http(self.concurrency)
        self._tasks = [asyncio.create_task(self._loop(i)) for i in range(self.concurrency)]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        assert self._client is not None
        await self._client.aclose()

    async def _loop(self, i: int) -> None:
        assert self._client is not None
        n = i
        while not self._stopping.is_set():
            key = self.keys[n % len(self.keys)]
            n += 1
            try:
                response = await self._client.get("/v1/affiliates", headers=bearer(key))
            except httpx.HTTPError as error:
                self.errors[type(error).__name__] += 1
                await asyncio.sleep(0.1)
                continue
            code = None
            if response.status_code >= 400:
                with contextlib.suppress(Exception):
                    code = response.json()["error"]["code"]
            self.outcomes.append(
                Outcome(response.headers["x-request-id"], response.status_code, code, time.time())
            )
            await asyncio.sleep(self.pause)

    def since(self, moment: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.at >= moment]

    def statuses(self, outcomes: list[Outcome] | None = None) -> Counter[tuple[int, str | None]]:
        return Counter(
            (o.status, o.code) for o in (self.outcomes if outcomes is None else outcomes)
        )
