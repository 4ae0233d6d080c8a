"""`icodrip`: the operator command line."""

from __future__ import annotations

from pathlib import Path

import click

from cli.dev import dev
from cli.serve import serve
from cli.worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the embedded default keeps its data (default ./.icodrip, or ICODRIP_DATA_DIR).",
)
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None) -> None:
    """Icodrip Keys: create, roll and revoke API keys; run the API and its workers."""
    ctx.obj = {"data_dir": data_dir}


for command in (dev, serve, worker):
    cli.add_command(command)


def main() -> None:
    cli()
