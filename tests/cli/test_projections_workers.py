"""`icodrip projections status` says whether each projection's worker is running.

Worker processes write a heartbeat per worker every few seconds (and `stopped` on the way
out); a worker not seen for 15 s is not running (ADR 0014).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from click.testing import CliRunner, Result
from structlog.testing import capture_logs

from adapters.settings import Settings
from bootstrap.workers import run_workers
from cli.projections import projections
from projections.generation_store import open_generation_store
from projections.generations import STALE_AFTER_SECONDS, Heartbeat
from projections.rebuilds import WorkerStatus


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(projections, list(args), env=env, obj={"data_dir": None})


def workers_in_status(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Projection name → its `worker` document, from `status --json`."""
    result = invoke(env, "status", "--json")
    assert result.exit_code == 0, result.output
    return {d["name"]: d["worker"] for d in json.loads(result.stdout)["data"]}


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.1)


@contextmanager
def workers_running(settings: Settings, names: list[str]) -> Iterator[None]:
    """`run_workers(names)` on an event loop of its own (as `icodrip dev` runs them)."""
    loop = asyncio.new_event_loop()
    stopping = asyncio.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(
                run_workers(settings, names, stopping=stopping, handle_signals=False)
            )
        except BaseException as error:
            errors.append(error)

    # Their logs kept out of the commands' output (structlog's default prints to stdout).
    with capture_logs():
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            loop.call_soon_threadsafe(stopping.set)
            thread.join(30)
            loop.close()
    assert not errors, errors


def test_status_shows_no_worker_running_when_none_runs(store_env: dict[str, str]) -> None:
    workers = workers_in_status(store_env)
    assert workers["key-lookup"] == {
        "name": "key-lookup",
        "running": False,
        "state": "not running",
        "instances": 0,
        "last_seen": None,
        "seconds_ago": None,
    }
    assert workers["request-audit"]["name"] == "audit"
    assert workers["request-audit"]["running"] is False
    assert workers["usage"]["name"] == "usage" and workers["usage"]["running"] is False

    human = invoke(store_env, "status")
    assert human.exit_code == 0, human.output
    assert "WORKER" in human.stdout
    assert human.stdout.count("not running (never seen)") == 3  # key-lookup, audit, usage


def test_status_shows_a_worker_running_while_it_runs_and_not_after(
    store_env: dict[str, str], settings: Settings
) -> None:
    with workers_running(settings, ["key-lookup"]):
        wait_for(lambda: workers_in_status(store_env)["key-lookup"]["running"])
        workers = workers_in_status(store_env)
        lookup = workers["key-lookup"]
        assert lookup["state"] == "running" and lookup["instances"] == 1
        assert lookup["seconds_ago"] is not None and lookup["seconds_ago"] < STALE_AFTER_SECONDS
        assert workers["request-audit"]["running"] is False  # its worker is not started here
        (line,) = [
            ln for ln in invoke(store_env, "status").stdout.splitlines() if "key-lookup" in ln
        ]
        assert "running (seen" in line and "not running" not in line

    lookup = workers_in_status(store_env)["key-lookup"]  # stopped: says so on its way out
    assert lookup["running"] is False and lookup["state"] == "not running"
    assert lookup["last_seen"] is not None
    (line,) = [ln for ln in invoke(store_env, "status").stdout.splitlines() if "key-lookup" in ln]
    assert "not running (last seen" in line


def beat(state: str, seconds_ago: float, instance: str = "host-a:1") -> Heartbeat:
    now = datetime.now(UTC)
    return Heartbeat(
        "audit", instance, state, now - timedelta(hours=1), now - timedelta(seconds=seconds_ago)
    )


def test_a_worker_not_seen_for_a_while_is_not_running() -> None:
    """A process killed (SIGKILL, a machine gone) writes no `stopped`: its beats go stale."""
    stale = WorkerStatus.of("audit", [beat("running", STALE_AFTER_SECONDS + 1)])
    assert not stale.running and stale.state == "not running" and stale.instances == 0
    assert stale.seconds_ago is not None and stale.seconds_ago > STALE_AFTER_SECONDS

    fresh = WorkerStatus.of("audit", [beat("running", 1), beat("running", 2, "host-b:7")])
    assert fresh.running and fresh.instances == 2

    retrying = WorkerStatus.of("audit", [beat("retrying", 1)])
    assert not retrying.running and retrying.state == "retrying"

    stopped = WorkerStatus.of("audit", [beat("stopped", 1)])
    assert not stopped.running and stopped.state == "not running"


def test_heartbeats_are_kept_per_worker_and_process(settings: Settings) -> None:
    store = open_generation_store(settings)
    try:
        started = datetime.now(UTC)
        store.beat("host-a:1", {"audit": "running", "relay": "running"}, started)
        store.beat("host-b:2", {"audit": "retrying"}, started)
        store.beat("host-a:1", {"audit": "stopped"}, started)
        beats = {(b.worker, b.instance): b.state for b in store.heartbeats()}
        assert beats == {
            ("audit", "host-a:1"): "stopped",
            ("relay", "host-a:1"): "running",
            ("audit", "host-b:2"): "retrying",
        }
        assert {b.instance for b in store.heartbeats("audit")} == {"host-a:1", "host-b:2"}
        assert store.forget_heartbeats(older_than=3600) == 0
        assert store.forget_heartbeats(older_than=0) == 3
        assert store.heartbeats() == []
    finally:
        store.close()
