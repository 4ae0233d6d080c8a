"""`icodrip worker` and `icodrip serve --workers 2` started at the same moment on a new
embedded data dir: neither dies of it, and the audit is ingested (issue 11, item 5).

Both used to create the read models' SQLite files at once; about one start in six the worker
exited with `Failed to record tracking for __migration__ 1 (store_unavailable)` and nothing
ingested the audit any more. Repeated a few times, each round on a fresh data dir.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import ICODRIP, Child, child_env, client, poll, wait_ready
from support.servers import NatsServer, free_port

pytestmark = pytest.mark.slow

ROUNDS = 3


def status(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    result = subprocess.run(
        [ICODRIP, "projections", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {d["name"]: d for d in json.loads(result.stdout)["data"]}


def one_round(root: Path, nats_url: str) -> None:
    stream = f"KEYS_{uuid.uuid4().hex[:8]}"
    env = child_env(
        ICODRIP_DATA_DIR=str(root / "data"),  # shared by both, new
        ICODRIP_NATS_URL=nats_url,
        ICODRIP_AUDIT_DURABLE=f"audit-{root.name}",
        ICODRIP_KEYS_STREAM=stream,
        ICODRIP_KEYS_SUBJECT=f"e2e.{stream.lower()}",
    )
    port = free_port()
    worker = Child("worker", ["worker"], env, root / "worker" / "output.log")
    serve = Child(
        "serve",
        ["serve", "--port", str(port), "--workers", "2", "--trusted-proxy", "127.0.0.1/32"],
        env,
        root / "serve" / "output.log",
    )
    worker.start()
    serve.start()
    try:
        with client(f"http://127.0.0.1:{port}", False) as http:
            wait_ready(http, serve)
            worker.wait_for_output('"key_lookup.started"')
            worker.wait_for_output('"audit.running"')
            # A request the API audits (an unknown key: 401), ingested by the worker.
            response = http.get(
                "/v1/affiliates",
                headers={"Authorization": "Bearer nope", "X-Forwarded-Proto": "https"},
            )
            assert response.status_code == 401, response.text
            took = poll(lambda: status(env)["request-audit"]["rows"] >= 1, 30, interval=0.5)
            assert took is not None, worker.describe()
        assert worker.alive, worker.describe()
        assert serve.alive, serve.describe()
        projections = status(env)
        assert projections["key-lookup"]["worker"]["running"], projections
        assert projections["request-audit"]["worker"]["running"], projections
        for child in (worker, serve):
            assert "Traceback" not in child.output(), child.describe()
            assert "__migration__" not in child.output(), child.describe()
    finally:
        serve.stop()
        worker.stop()
    projections = status(env)
    assert not projections["key-lookup"]["worker"]["running"], projections


def test_worker_and_serve_started_together_on_a_new_data_dir_both_survive(
    tmp_path: Path, private_nats: NatsServer
) -> None:
    for n in range(ROUNDS):
        one_round(tmp_path / f"round-{n}", private_nats.url)
