"""Rebuilding the request-audit model from the stream while the ingest worker keeps running."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from click.testing import CliRunner, Result

from adapters.settings import Settings
from cli.main import cli
from projections.generation_store import open_generation_store
from projections.request_audit_live import (
    REQUEST_AUDIT,
    LiveRequestAuditStore,
    open_live_audit_store,
)
from projections.request_audit_query import DEFAULT_NAME, RequestAuditStore
from support.audit_events import WORKER, event_ids, make_batch, publish
from support.servers import NatsServer, env_with


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, ["projections", *args], env=env)


def wait_for_rows(store: RequestAuditStore, expected: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while (count := store.count()) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


def live_generation(settings: Settings) -> tuple[int, str]:
    pointers = open_generation_store(settings)
    try:
        live = pointers.live(REQUEST_AUDIT, DEFAULT_NAME)
        return live.number, live.view_name
    finally:
        pointers.close()


def test_a_rebuild_under_live_ingestion_keeps_every_event_exactly_once(
    store_env: dict[str, str], settings: Settings, private_nats: NatsServer, tmp_path: Path
) -> None:
    before = [make_batch(40) for _ in range(60)]
    during = [make_batch(40) for _ in range(40)]
    expected = {e.id for batch in before + during for e in batch}
    asyncio.run(publish(private_nats.url, before))
    env = env_with(**store_env, ICODRIP_NATS_URL=private_nats.url)
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        worker = subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=out, stderr=out)
    reader = LiveRequestAuditStore(settings)  # what the API reads through
    try:
        first = open_live_audit_store(settings)
        assert wait_for_rows(first, 2400) == 2400, log.read_text()[-2000:]
        first.close()
        traffic = threading.Thread(
            target=lambda: asyncio.run(publish(private_nats.url, during, interval=0.02))
        )
        traffic.start()
        result = invoke(env, "rebuild", REQUEST_AUDIT, "--grace", "2", "--json")
        traffic.join(60)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        live = open_live_audit_store(settings)
        try:
            count = wait_for_rows(live, len(expected))
            time.sleep(0.5)  # room for a wrong extra row to appear
            ids = event_ids(live)
            reports = live.verify()
        finally:
            live.close()
        served = reader.count()
    finally:
        worker.terminate()
        worker.wait(15)
        reader.close()

    assert report["generation"] == 2 and report["removed"] == DEFAULT_NAME
    assert live_generation(settings) == (2, f"{DEFAULT_NAME}_g2")
    assert count == len(expected), log.read_text()[-3000:]
    assert len(ids) == len(set(ids)) and set(ids) == expected
    assert all(r.broken is None for r in reports)
    assert served == len(expected)
    assert "audit.switched" in log.read_text()


def test_status_shows_the_audit_model_and_its_lag_behind_the_stream(
    store_env: dict[str, str], private_nats: NatsServer
) -> None:
    batches = [make_batch(random.randint(5, 15)) for _ in range(7)]
    asyncio.run(publish(private_nats.url, batches))
    env = env_with(**store_env, ICODRIP_NATS_URL=private_nats.url)

    result = invoke(env, "status", "--json")

    assert result.exit_code == 0, result.output
    (audit,) = [d for d in json.loads(result.stdout)["data"] if d["name"] == REQUEST_AUDIT]
    assert (audit["position"], audit["head"], audit["lag"]) == (0, 7, 7)
    assert audit["view"] == DEFAULT_NAME and audit["rows"] == 0
