"""`icodrip serve`'s processes: workers never outlive their master, and no two share a port.

granian's workers bind with SO_REUSEPORT, so orphaned workers of a killed master would keep
answering with the old code beside a new `serve` on the same port. Both halves are checked
with real processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx

from e2e.harness import ICODRIP, Child, Children, child_env, client, poll, wait_ready
from support.servers import free_port


def children_of(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent_and_state(int(entry.name))[0] == pid:
            found.add(int(entry.name))
    return found


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an orphan may wait for a reaper)."""
    parent, state = _parent_and_state(pid)
    return parent is not None and state != "Z"


def _parent_and_state(pid: int) -> tuple[int | None, str]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None, ""
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return int(fields[1]), fields[0]


def answers(port: int) -> bool:
    try:
        with client(f"http://127.0.0.1:{port}", False, timeout=2.0) as plain:
            plain.get("/readyz")
    except httpx.TransportError:
        return False
    return True


def start_serve(children: Children, name: str, port: int, workers: int = 1) -> Child:
    return children.start(
        name,
        child_env(),
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--trusted-proxy",
        "127.0.0.1/32",
    )


@contextlib.contextmanager
def reuseport_listener(port: int) -> Iterator[socket.socket]:
    """A listener on 127.0.0.1:port bound the way granian's workers bind theirs."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        yield listener


def test_killing_the_serve_master_takes_its_workers_and_the_port_with_it(
    children: Children,
) -> None:
    port = free_port()
    serve = start_serve(children, "serve", port, workers=2)
    with client(f"http://127.0.0.1:{port}", False) as plain:
        wait_ready(plain, serve)
    assert serve.proc is not None
    workers = children_of(serve.proc.pid)
    assert len(workers) == 2, serve.describe()

    os.kill(serve.proc.pid, signal.SIGKILL)
    serve.proc.wait(10)

    took = poll(lambda: not any(is_running(pid) for pid in workers), timeout=10, interval=0.1)
    left = {pid for pid in workers if is_running(pid)}
    assert took is not None, (
        f"workers {left} outlived their master: {serve.describe()}{serve.stacks()}"
    )
    assert not answers(port), "the port still answers after its serve was killed"


def run_to_exit(args: list[str], env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """Run `icodrip ARGS`: its exit status and stderr; fails if it is still running at `timeout`."""
    with subprocess.Popen(
        [ICODRIP, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AssertionError(f"icodrip {' '.join(args)} kept running") from None
        return proc.returncode, stderr


def test_serve_refuses_a_port_already_in_use_with_one_line_and_exit_2(tmp_path: Path) -> None:
    port = free_port()
    env = child_env(ICODRIP_DATA_DIR=str(tmp_path / "data"))
    with reuseport_listener(port):
        status, stderr = run_to_exit(
            ["serve", "--port", str(port), "--trusted-proxy", "127.0.0.1/32"], env
        )
    assert status == 2, stderr
    assert stderr.splitlines() == [
        f"error: 127.0.0.1:{port} is already in use (another icodrip serve or dev, or workers "
        "it left behind); stop it or choose another --port (port_in_use)"
    ]


def test_dev_refuses_a_port_already_in_use_before_starting_anything(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    with reuseport_listener(port):
        status, stderr = run_to_exit(
            ["--data-dir", str(data_dir), "dev", "--port", str(port)], child_env()
        )
    assert status == 2, stderr
    assert stderr.strip().endswith("(port_in_use)"), stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert not (data_dir / "nats").exists()
