"""`icodrip`: the operator command line (the `icodrip` console script calls `main`)."""

from __future__ import annotations

from pathlib import Path

import click

from adapters.logging import configure_logging
from cli.audit import audit
from cli.common import Group
from cli.dev import dev
from cli.history import history
from cli.keys import keys
from cli.orgs import orgs
from cli.projections import projections
from cli.scan import scan
from cli.serve import serve
from cli.usage import usage
from cli.users import users
from cli.webhooks import webhooks
from cli.worker import worker


@click.group(
    "icodrip",
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        "Example: icodrip --data-dir ./.icodrip orgs create --name Acme --json\n\n"
        "Settings come from ICODRIP_* variables (ICODRIP_DATABASE_URL, ICODRIP_KEY_PEPPER, ...);"
        " with none set, the embedded default keeps everything in ./.icodrip."
    ),
)
@click.version_option(package_name="icodrip-keys", prog_name="icodrip")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the embedded default keeps its data (overrides ICODRIP_DATA_DIR; "
    "default ./.icodrip).",
)
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None) -> None:
    """Icodrip Keys: create, roll and revoke API keys; run the API and its workers."""
    # Logs go to stderr: with --json, stdout carries exactly one JSON document.
    configure_logging(json=False)
    # A plain dict: every command module reads `ctx.find_root().obj["data_dir"]`.
    ctx.obj = {"data_dir": data_dir}


# The subcommands (`icodrip --help` lists them alphabetically); add new ones here.
cli.add_command(orgs)
cli.add_command(keys)
cli.add_command(worker)
cli.add_command(serve)
cli.add_command(dev)
cli.add_command(audit)
cli.add_command(projections)
cli.add_command(scan)
cli.add_command(users)
cli.add_command(usage)
cli.add_command(webhooks)
keys.add_command(history)


def main() -> None:
    """Entry point of the `icodrip` console script."""
    cli(prog_name="icodrip")


if __name__ == "__main__":
    main()
