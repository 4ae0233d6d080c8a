"""`icodrip serve`: production API processes under granian, terminating TLS or behind a proxy."""

from __future__ import annotations

import ctypes
import errno
import functools
import importlib
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
from granian.constants import Interfaces
from granian.log import LogLevels
from granian.server import Server

from cli.common import CliError

#: `prctl` option: the signal the kernel sends this process when its parent dies.
PR_SET_PDEATHSIG = 1
#: How long an orphaned worker may drain after SIGTERM before it exits regardless (seconds).
ORPHAN_GRACE = 5.0
_PARENT_POLL = 0.5
#: How long the master waits for a stopping worker before it kills it (seconds): above the
#: worker's own bounded drain (publisher 5 s + NATS 5 s + exposure flags), for a worker hung
#: in granian's SIGTERM handler (ADR 0013), whose answered requests are on disk already.
WORKER_STOP_TIMEOUT = 30
# Looked up in the master: a dlopen in a child forked from a process with threads could
# wait forever on a loader lock another thread held at the fork.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def ensure_port_free(host: str, port: int) -> None:
    """Refuse (one line, exit 2) a host and port something already listens on."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise CliError(f"cannot listen on {host}:{port}: {error}", "port_unavailable") from None
    with socket.socket(family, kind, proto) as probe:
        # SO_REUSEADDR so that the last run's connections in TIME_WAIT do not block a restart;
        # no SO_REUSEPORT, so any listener (granian's workers set it) makes the bind fail,
        # where granian itself would quietly bind beside it and share the traffic.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise CliError(
                    f"{host}:{port} is already in use (another icodrip serve or dev, or workers "
                    "it left behind); stop it or choose another --port",
                    "port_in_use",
                ) from None
            raise CliError(
                f"cannot listen on {host}:{port}: {error.strerror}", "port_unavailable"
            ) from None


def bind_to_master(master_pid: int, death_signal: int = signal.SIGTERM) -> None:
    """Right after fork, in a child: stop when the master dies, even if it dies by SIGKILL."""
    # The child inherits the master's SIGTERM handler, which only sets an event of the
    # master's: until granian installs the worker's own, a SIGTERM would be ignored.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _notice_master_death(master_pid, death_signal)


def _notice_master_death(master_pid: int, death_signal: int) -> None:
    if _prctl is not None:
        # The kernel's notice is immediate and needs nothing of this process to be responsive.
        # Set by the main thread: the kernel sends each thread's own choice.
        _prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
    if os.getppid() != master_pid:  # it died before the notice was asked for
        os._exit(1)


def _exit_when_orphaned(master_pid: int) -> None:
    while os.getppid() == master_pid:
        time.sleep(_PARENT_POLL)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE)
    os._exit(1)


def _load_app(master_pid: int, target: str) -> Any:
    # Again here for workers that were spawned rather than forked (no fork hook ran).
    _notice_master_death(master_pid, signal.SIGKILL)
    # Elsewhere than Linux the only notice (on Linux the kernel's SIGKILL comes first).
    watch = threading.Thread(
        target=_exit_when_orphaned, args=(master_pid,), name="icodrip-master-watch", daemon=True
    )
    watch.start()
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name or "app")


def run_granian(
    *,
    host: str,
    port: int,
    workers: int,
    certfile: Path | None,
    keyfile: Path | None,
    log_level: str = "warning",
) -> None:
    """Serve `bootstrap.asgi:app` until interrupted (settings reach the workers via the env)."""
    master_pid = os.getpid()
    # This process is granian's master from here on: each worker it forks is bound to it
    # before any of granian's code runs in the worker. An orphan is killed outright, not
    # asked to drain: a SIGTERM can hang a granian 2.8 worker for good inside its signal
    # handler (seen under load, starting and serving: the handler holds the GIL, so not
    # even the orphan watch runs). Nothing answered is lost: request events are on disk
    # before the response (ADR 0016); requests in flight fail as in any crash.
    os.register_at_fork(
        after_in_child=functools.partial(bind_to_master, master_pid, signal.SIGKILL)
    )
    Server(
        "bootstrap.asgi:app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        ssl_cert=certfile,
        ssl_key=keyfile,
        log_level=LogLevels(log_level),
        respawn_failed_workers=True,
        workers_kill_timeout=WORKER_STOP_TIMEOUT,
    ).serve(target_loader=functools.partial(_load_app, master_pid))


@click.command(
    "serve",
    epilog=(
        "Examples:\n\n"
        "  icodrip serve --port 443 --workers 4 --certfile cert.pem --keyfile key.pem\n\n"
        "  icodrip serve --port 8000 --trusted-proxy 10.0.0.0/8"
    ),
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8443, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    help="CIDR of a TLS proxy whose X-Forwarded-Proto/-For are believed (repeatable).",
)
def serve(
    host: str,
    port: int,
    workers: int,
    certfile: Path | None,
    keyfile: Path | None,
    trusted_proxies: tuple[str, ...],
) -> None:
    """Run the API: TLS with --certfile/--keyfile, or plain HTTP behind --trusted-proxy."""
    if bool(certfile) != bool(keyfile):
        raise click.UsageError("--certfile and --keyfile go together")
    if not certfile and not trusted_proxies:
        raise click.UsageError(
            "give --certfile and --keyfile (TLS here) or --trusted-proxy CIDR (TLS at a proxy)"
        )
    ensure_port_free(host, port)
    os.environ["ICODRIP_TRUSTED_PROXIES"] = ",".join(trusted_proxies)
    run_granian(host=host, port=port, workers=workers, certfile=certfile, keyfile=keyfile)
