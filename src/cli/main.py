"""`icodrip`: the operator command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.dev import dev
from cli.keys import keys
from cli.orgs import orgs
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


for command in (orgs, keys, worker, serve, dev):
    cli.add_command(command)


def main() -> None:
    """Entry point: usage errors become one line on stderr and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        click.echo(f"error: {error.format_message()} (usage_error)", err=True)
        sys.exit(2)
