"""`icodrip worker`: the relay and projection workers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from adapters.logging import configure_logging
from adapters.settings import Settings
from bootstrap.workers import WORKERS, run_workers


@click.command(
    "worker",
    epilog="Example: ICODRIP_NATS_URL=nats://127.0.0.1:4222 icodrip worker relay",
)
@click.argument("names", nargs=-1, type=click.Choice(sorted(WORKERS)))
@click.pass_context
def worker(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Run workers (all of them when none is named) until SIGINT or SIGTERM.

    A worker whose store, NATS or Redis is not usable yet (or any more) starts again with
    backoff; each worker's heartbeat shows in `icodrip projections status`.
    """
    configure_logging()
    data_dir = (ctx.obj or {}).get("data_dir") if isinstance(ctx.obj, dict) else None
    settings = Settings.from_env(data_dir=Path(data_dir) if data_dir else None)
    asyncio.run(run_workers(settings, list(names)))
