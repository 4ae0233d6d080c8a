"""`icodrip serve`: production API processes under granian, terminating TLS or behind a proxy."""

from __future__ import annotations

import os
from pathlib import Path

import click


def run_granian(
    *,
    host: str,
    port: int,
    workers: int,
    certfile: Path | None,
    keyfile: Path | None,
    log_level: str = "warning",
) -> None:
    """Serve `api.asgi:app` until interrupted (settings reach the workers via the env)."""
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    Server(
        "api.asgi:app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        ssl_cert=certfile,
        ssl_key=keyfile,
        log_level=LogLevels(log_level),
        respawn_failed_workers=True,
    ).serve()


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
    os.environ["ICODRIP_TRUSTED_PROXIES"] = ",".join(trusted_proxies)
    run_granian(host=host, port=port, workers=workers, certfile=certfile, keyfile=keyfile)
