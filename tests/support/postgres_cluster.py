"""A PostgreSQL 15 cluster of a test's own, on a free port, that the test may crash and restart
(`pg_ctl -m immediate stop`); never the machine's shared server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.servers import free_port, wait_for_port

PG_BIN = Path(os.environ.get("ICODRIP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(*args: str) -> list[str]:
    """Run as the `postgres` user when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return list(args)


class PostgresCluster:
    """A PostgreSQL 15 cluster of its own, in a temp dir owned by `postgres`, on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp dirs: those are root-only, and the server runs as `postgres`.
        self.root = Path(tempfile.mkdtemp(prefix="icodrip-faults-pg-"))
        self.data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(
            _as_postgres(
                str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        subprocess.run(
            _as_postgres(
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.root / "log"),
                "-w",
                "start",
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for_port(self.port)

    def crash(self) -> None:
        """`pg_ctl -m immediate stop`: no shutdown checkpoint, as a crash would leave it."""
        self.stop("immediate")

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl -m MODE stop`: `fast` is a clean restart's stop (sessions are told, then
        closed), `immediate` a crash's."""
        subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop"),
            check=False,
            capture_output=True,
            timeout=60,
        )

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self) -> None:
        self.crash()
        shutil.rmtree(self.root, ignore_errors=True)
