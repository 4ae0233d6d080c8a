"""Throwaway NATS and Redis servers on free ports, for tests that need to kill them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from adapters.embedded_nats import nats_server_binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class ManagedProcess:
    """A server process we can kill -9 and start again on the same port and data dir."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()


class NatsServer(ManagedProcess):
    """nats-server with JetStream (file storage in `store_dir`), fsync on every write."""

    def __init__(self, store_dir: Path, port: int | None = None) -> None:
        super().__init__(port or free_port())
        self.store_dir = store_dir
        self.config = store_dir / "nats.conf"
        store_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'jetstream {{\n  store_dir: "{store_dir}"\n  sync_interval: always\n}}\n'
        )

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-c",
            str(self.config),
        ]


class RedisServer(ManagedProcess):
    """A private redis-server that keeps nothing on disk."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port or free_port())

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            shutil.which("redis-server") or "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
        ]


def env_with(**overrides: str) -> dict[str, str]:
    """The current environment plus overrides, for child processes."""
    env = dict(os.environ)
    env.update(overrides)
    return env
