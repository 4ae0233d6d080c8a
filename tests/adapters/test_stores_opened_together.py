"""Processes opening one new data dir at the same moment: every one of them gets its stores.

`icodrip serve`'s workers and `icodrip worker` open the same SQLite files at start. Creating
them at once used to fail in the second process: `Failed to record tracking for __migration__
1` (the key-lookup view and the request-audit model: `eventsourcing` looks for the tracking
table and creates it in two transactions), `database is locked` (a new file's switch to WAL),
and `FileExistsError` or an empty pepper (the pepper made in place). ADR 0014.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from adapters.data_dir_lock import data_dir_lock

#: Opens, in each of several data dirs in turn at an agreed moment, what a process opens at
#: start; one JSON line per data dir.
OPENER = """
import json, sys, time
from pathlib import Path
from adapters.affiliates import open_affiliate_store
from application.stores import open_registry
from adapters.settings import Settings
from projections.live_key_lookup import LiveKeyLookupView
from projections.request_audit_live import open_live_audit_store

first, spacing = float(sys.argv[1]), float(sys.argv[2])
root, rounds = Path(sys.argv[3]), int(sys.argv[4])
for n in range(rounds):
    at = first + n * spacing
    while (left := at - time.time()) > 0:
        time.sleep(min(left, 0.001))
    try:
        settings = Settings.from_env({}, data_dir=root / f"round-{n}")
        view = LiveKeyLookupView(settings)
        view.count()
        view.close()
        open_live_audit_store(settings).close()
        open_affiliate_store(settings).close()
        open_registry(settings).close()
        print(json.dumps({"round": n, "pepper": settings.key_pepper.decode()}), flush=True)
    except Exception as error:
        print(json.dumps({"round": n, "error": f"{type(error).__name__}: {error}"}), flush=True)
"""


def test_processes_started_together_on_a_new_data_dir_all_open_their_stores(
    tmp_path: Path,
) -> None:
    processes, rounds, spacing = 4, 8, 0.6
    first = time.time() + 3.0  # all of them imported and waiting by then
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICODRIP_")}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(first), str(spacing), str(tmp_path), str(rounds)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = [child.communicate(timeout=60) for child in children]

    results = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    errors = [r for r in results if "error" in r]
    assert not errors, errors
    assert len(results) == processes * rounds, [err[-2000:] for _, err in outputs]
    for n in range(rounds):  # one pepper per data dir, whoever made it
        assert len({r["pepper"] for r in results if r["round"] == n}) == 1


def test_the_data_dir_lock_excludes_other_threads_and_is_reentrant(tmp_path: Path) -> None:
    held = threading.Event()
    release = threading.Event()
    entered: list[float] = []

    def holder() -> None:
        with data_dir_lock(tmp_path), data_dir_lock(tmp_path):  # re-entrant in its thread
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(5)

    def other() -> None:
        with data_dir_lock(tmp_path):
            entered.append(time.monotonic())

    waiter = threading.Thread(target=other)
    waiter.start()
    time.sleep(0.3)
    assert not entered  # waits while the holder has it
    released_at = time.monotonic()
    release.set()
    thread.join(5)
    waiter.join(5)
    assert entered and entered[0] >= released_at
    assert (tmp_path / "schema.lock").stat().st_mode & 0o777 == 0o600


def test_the_lock_of_a_process_that_died_is_free(tmp_path: Path) -> None:
    script = (
        "import sys, time; from pathlib import Path; "
        "from adapters.data_dir_lock import data_dir_lock\n"
        "with data_dir_lock(Path(sys.argv[1])):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        child.kill()  # SIGKILL: no clean-up of its own
        child.wait(10)
        started = time.monotonic()
        with data_dir_lock(tmp_path):
            assert time.monotonic() - started < 2
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
