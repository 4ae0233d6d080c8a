"""The secrets audit: after a realistic run of the real stack — keys created, rolled and revoked
through the CLI and the API, requests made with good, revoked, mistyped and misplaced keys (keys
typed into paths, User-Agents and invalid bodies too), the relay, the key-lookup view and the
audit worker all running — no plaintext key (nor its random part, with or without checksum) is
in any log line, NATS message, database row, Redis entry or file the processes wrote, nor in
any response but the one-time reveal; and one organization's key never reaches another's keys,
affiliates or audit rows.

A NATS server, a Redis and a PostgreSQL 15 cluster of this module's own (so that every message,
entry and row in them is this run's), `icodrip` CLI runs, one `icodrip worker` and one
`icodrip serve` over TLS, with debug logging so that every log line the code has is written.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from e2e.harness import (
    ICODRIP,
    Children,
    Pki,
    bearer,
    child_env,
    client,
    loopback_address,
    trusting,
    wait_ready,
)
from support.dumps import (
    Item,
    files_under,
    hits,
    nats_messages_sync,
    postgres_rows,
    redis_entries,
)
from support.postgres_cluster import PostgresCluster
from support.servers import NatsServer, RedisServer, free_port

pytestmark = pytest.mark.slow


@dataclass
class Run:
    """What the scenario produced: the secrets it saw, and what it then collected."""

    secrets: list[str] = field(default_factory=list)
    cli_stdout: list[Item] = field(default_factory=list)
    cli_stderr: list[Item] = field(default_factory=list)
    cross_org: list[tuple[str, httpx.Response]] = field(default_factory=list)
    echoes: list[Item] = field(default_factory=list)
    audited_request_ids: list[str] = field(default_factory=list)
    b_org_id: str = ""
    b_key_ids: set[str] = field(default_factory=set)
    logs: list[Item] = field(default_factory=list)
    files: list[Item] = field(default_factory=list)
    nats: list[Item] = field(default_factory=list)
    rows: list[Item] = field(default_factory=list)
    redis: list[Item] = field(default_factory=list)
    audit_rows: int = 0


class Cli:
    """Runs `icodrip … --json`, keeping stdout (the one-time reveal) apart from stderr (logs)."""

    def __init__(self, env: dict[str, str], run: Run, cwd: Path) -> None:
        self.env, self.run, self.cwd = env, run, cwd

    def __call__(self, *args: str) -> dict[str, Any]:
        result = subprocess.run(
            [ICODRIP, *args, "--json"],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            timeout=60,
            check=False,
        )
        where = f"icodrip {' '.join(args[:2])}"
        self.run.cli_stdout.append(Item(f"stdout of {where}", result.stdout))
        self.run.cli_stderr.append(Item(f"stderr of {where}", result.stderr))
        assert result.returncode == 0, f"{where}: {result.stderr.decode(errors='replace')}"
        document: dict[str, Any] = json.loads(result.stdout)
        if "key" in document:
            self.run.secrets.append(document["key"])
        return document


@pytest.fixture(scope="module")
def run(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("secrets-audit")
    nats = NatsServer(root / "nats")
    redis_server = RedisServer()
    nats.start()
    redis_server.start()
    children = Children(root / "children")
    result = Run()
    postgres = PostgresCluster()  # of its own: every table in it is this run's
    try:
        postgres.start()
        stream = f"KEYS_AUDIT_{uuid.uuid4().hex[:8]}"
        deployment = {
            "ICODRIP_DATABASE_URL": postgres.url,
            "ICODRIP_NATS_URL": nats.url,
            "ICODRIP_KEY_PEPPER": "audit-pepper-" + uuid.uuid4().hex,
            "ICODRIP_KEYS_STREAM": stream,
            "ICODRIP_KEYS_SUBJECT": f"audit.{stream.lower()}",
        }
        env = child_env(**deployment, ICODRIP_REDIS_URL=redis_server.url, ICODRIP_LOG_LEVEL="debug")
        (root / "cli").mkdir()
        cli = Cli({**env, "ICODRIP_DATA_DIR": str(root / "cli" / "data")}, result, root / "cli")
        _scenario(cli, children, env, pki, result)
        children.stop_all()  # SIGTERM: every process flushes its logs and its publisher
        result.logs = files_under(children.root, extensions={".log"})
        result.files = files_under(children.root, root / "cli")
        result.nats = nats_messages_sync(nats.url)
        result.rows = postgres_rows(deployment["ICODRIP_DATABASE_URL"])
        result.redis = redis_entries(redis_server.url)
        result.audit_rows = _count_audit_rows(
            deployment["ICODRIP_DATABASE_URL"], result.audited_request_ids
        )
        yield result
    finally:
        children.stop_all()
        redis_server.stop()
        nats.stop()
        postgres.remove()


def _scenario(cli: Cli, children: Children, env: dict[str, str], pki: Pki, run: Run) -> None:
    # -- the CLI: organizations and keys, a roll, a revocation (independent runs in parallel) --
    with ThreadPoolExecutor(3) as pool:
        org_a, org_b = pool.map(
            lambda args: cli(*args),
            [
                ("orgs", "create", "--name", "Audit A", "--plan", "pro"),
                ("orgs", "create", "--name", "Audit B", "--plan", "pro"),
            ],
        )
        run.b_org_id = org_b["id"]
        admin_a, admin_b, test_a = pool.map(
            lambda args: cli(*args),
            [
                ("keys", "create", "--org", org_a["id"], "--name", "admin A"),
                ("keys", "create", "--org", org_b["id"], "--name", "admin B"),
                ("keys", "create", "--org", org_a["id"], "--name", "test A", "--env", "test"),
            ],
        )
    rolled_by_cli = cli("keys", "roll", test_a["id"], "--expire-in", "1h")
    cli("keys", "revoke", rolled_by_cli["id"], "--reason", "audit scenario")
    run.b_key_ids = {admin_b["id"]}

    # -- the workers and one API process over TLS ---------------------------------------------
    worker = children.start("worker", env, "worker")
    worker.wait_for_output("relay.started", timeout=30)
    worker.wait_for_output("key_lookup.started", timeout=30)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    serve = children.start(
        "serve",
        env,
        "serve",
        "--port",
        str(port),
        "--workers",
        "1",
        "--certfile",
        str(pki.server_cert),
        "--keyfile",
        str(pki.server_key),
    )
    with client(url, trusting(pki.ca_cert), local_address=loopback_address()) as http:
        wait_ready(http, serve)

        def call(method: str, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
            headers = dict(kwargs.pop("headers", {}))
            if key is not None:
                headers.update(bearer(key))
            response = http.request(method, path, headers=headers, **kwargs)
            if "Authorization" in headers:
                run.audited_request_ids.append(response.headers["x-request-id"])
            return response

        a, b = admin_a["key"], admin_b["key"]
        # -- the API: create, roll, revoke, rename; use every key ---------------------------
        created = call("POST", "/v1/api-keys", a, json={"name": "made by API"})
        assert created.status_code == 201, created.text
        run.secrets.append(created.json()["key"])
        rolled = call("POST", f"/v1/api-keys/{created.json()['id']}/roll", a, json={})
        assert rolled.status_code == 200, rolled.text
        run.secrets.append(rolled.json()["key"])
        call("PATCH", f"/v1/api-keys/{rolled.json()['id']}", a, json={"name": "renamed"})
        revoked = call("POST", f"/v1/api-keys/{created.json()['id']}/revoke", a, json={})
        assert revoked.status_code == 200, revoked.text
        b_key = call("POST", "/v1/api-keys", b, json={"name": "B's own"})
        assert b_key.status_code == 201, b_key.text
        run.secrets.append(b_key.json()["key"])
        run.b_key_ids.add(b_key.json()["id"])
        affiliate_b = call("POST", "/v1/affiliates", b, json={"name": "B's partner"})
        assert affiliate_b.status_code == 201, affiliate_b.text
        call("POST", "/v1/affiliates", a, json={"name": "A's partner", "email": "p@a.example"})

        for secret in run.secrets:
            call("GET", "/v1/affiliates", secret)
            call("GET", "/v1/api-keys/current", secret)
        public_a = call(
            "POST",
            "/v1/api-keys",
            a,
            json={"name": "browser A", "type": "public", "allowed_origins": ["https://a.example"]},
        )
        assert public_a.status_code == 201, public_a.text
        run.secrets.append(public_a.json()["key"])
        call("POST", "/v1/events", public_a.json()["key"], json={"event": "signup"})
        typo = a[:-1] + ("x" if a[-1] != "x" else "y")
        call("GET", "/v1/affiliates", typo)
        call("GET", "/v1/affiliates", None, headers={"Authorization": f"bearer {a} {a}"})
        call("GET", "/v1/affiliates", None, headers={"Authorization": f"Basic {a}"})
        http.get("/v1/affiliates", params={"api_key": a})  # a key in the URL: refused
        http.get(f"/v1/affiliates/{a}")  # a key in the path: refused, no key presented

        # -- keys typed where they do not belong, by a client that does present a key: paths
        # and User-Agents (audited and logged) and invalid bodies (echoed in the error) ---------
        def planted(method: str, path: str, key: str | None, **kwargs: Any) -> None:
            response = call(method, path, key, **kwargs)
            run.echoes.append(Item(f"response to {method} {path[:40]}", response.content))

        planted("GET", f"/v1/affiliates/{a}", a)
        planted("GET", f"/v1/api-keys/{b}", a)
        planted("GET", "/v1/affiliates", a, headers={"User-Agent": f"deploy-bot/2.1 ({b})"})
        planted("POST", "/v1/api-keys", a, json={"name": "planted", "env": a})
        planted("POST", "/v1/api-keys", a, json={"name": "planted", "permissions": [b]})
        planted("POST", "/v1/affiliates", a, json={"name": "planted", a: 1})
        planted("PATCH", f"/v1/api-keys/{rolled.json()['id']}", a, json={"allowed_ips": [b]})
        # No such route: nothing authenticates it, so it is only logged (its path as the route).
        unrouted = http.get(f"/v1/no-such-route/{a}", headers={**bearer(a), "User-Agent": a})
        run.echoes.append(Item("response to an unknown route", unrouted.content))

        # -- cross-organization attempts: A's key on B's things --------------------------------
        for key_id in sorted(run.b_key_ids):
            for method, path, body in [
                ("GET", f"/v1/api-keys/{key_id}", None),
                ("PATCH", f"/v1/api-keys/{key_id}", {"name": "taken over"}),
                ("POST", f"/v1/api-keys/{key_id}/roll", {}),
                ("POST", f"/v1/api-keys/{key_id}/revoke", {}),
                ("GET", f"/v1/api-keys/{key_id}/history", None),
            ]:
                run.cross_org.append((f"{method} {path}", call(method, path, a, json=body)))
            run.cross_org.append(
                (
                    "GET audit by B's key",
                    call("GET", "/v1/audit/requests", a, params={"key_id": key_id}),
                )
            )
        run.cross_org.append(
            (
                "GET B's affiliate",
                call("GET", f"/v1/affiliates/{affiliate_b.json()['id']}", a),
            )
        )
        run.cross_org.append(("GET events as A", call("GET", "/v1/audit/events", a)))
        run.cross_org.append(("GET audit as A", call("GET", "/v1/audit/requests", a)))

    # -- wait until the audit worker has every request made with a key (refused ones too) ---
    database = env["ICODRIP_DATABASE_URL"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _count_audit_rows(database, run.audited_request_ids) >= len(run.audited_request_ids):
            break
        time.sleep(0.2)


def _count_audit_rows(url: str, request_ids: list[str]) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM requestaudit_rows WHERE request_id = ANY(%s)", [request_ids]
        ).fetchone()
    return int(row[0]) if row else 0


# -- the search can find what it looks for --------------------------------------------------


def test_the_search_finds_the_secrets_where_they_are_meant_to_be(run: Run) -> None:
    """The one-time reveal (the CLI's stdout) holds every CLI-made key: the needles work."""
    cli_secrets = [s for s in run.secrets if any(s.encode() in i.content for i in run.cli_stdout)]
    assert len(cli_secrets) >= 4
    assert len(list(hits(run.cli_stdout, cli_secrets))) >= 4


def test_the_haystacks_hold_the_whole_run(run: Run) -> None:
    assert len(run.secrets) >= 8
    assert len(run.logs) >= 2 and sum(len(i.content) for i in run.logs) > 10_000
    assert any("ICODRIP_AUDIT" in i.where for i in run.nats)
    assert any("KEYS_AUDIT" in i.where for i in run.nats)
    assert any("requestaudit_rows" in i.where for i in run.rows)
    assert any(b"rl:" in i.content for i in run.redis)


def test_every_request_made_with_a_key_has_exactly_one_audit_row(run: Run) -> None:
    assert run.audit_rows == len(set(run.audited_request_ids))


# -- zero hits --------------------------------------------------------------------------------


def test_no_log_line_contains_a_secret(run: Run) -> None:
    assert not list(hits(run.logs + run.cli_stderr, run.secrets))


def test_no_nats_message_contains_a_secret(run: Run) -> None:
    assert not list(hits(run.nats, run.secrets))


def test_no_database_row_contains_a_secret(run: Run) -> None:
    assert not list(hits(run.rows, run.secrets))


def test_no_redis_key_or_value_contains_a_secret(run: Run) -> None:
    assert not list(hits(run.redis, run.secrets))


def test_no_file_any_process_wrote_contains_a_secret(run: Run) -> None:
    assert not list(hits(run.files, run.secrets))


def test_no_response_echoes_a_key_planted_in_a_path_header_or_body(run: Run) -> None:
    assert len(run.echoes) >= 8
    assert not list(hits(run.echoes, run.secrets))


# -- cross-organization access ------------------------------------------------------------------


def test_no_cross_org_attempt_succeeds(run: Run) -> None:
    leaks = []
    for what, response in run.cross_org:
        text = response.text
        if what.startswith("GET audit"):
            # A's own rows name B's key ids in their paths (A asked for them): look at whose
            # rows they are, not at the text.
            assert response.status_code in (200, 404), (what, text)
            rows = response.json().get("data", []) if response.status_code == 200 else []
            leaked = any(
                row["organization"] == run.b_org_id or row["key_id"] in run.b_key_ids
                for row in rows
            )
        elif what.startswith("GET events"):
            assert response.status_code == 200, (what, text)
            leaked = run.b_org_id in text or any(k in text for k in run.b_key_ids)
        else:
            assert response.status_code == 404, (what, response.status_code, text)
            leaked = False
        if leaked:
            leaks.append(what)
    assert not leaks
    assert len(run.cross_org) >= 10
