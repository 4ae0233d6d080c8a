"""`icodrip projections`: where each read model stands, and rebuilding one without downtime."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from bootstrap.projections import PROJECTION_NAMES, assemble_projections
from cli.common import CliError, Group, emit, friendly_errors, json_option, settings_from
from projections.generations import RebuildInProgress, SwitchConflict
from projections.rebuilds import DEFAULT_GRACE_SECONDS, RebuildProgress

#: Without a terminal, a progress line at most this often.
LINE_INTERVAL = 2.0


@click.group(
    "projections",
    cls=Group,
    epilog="Example: icodrip projections status; icodrip projections rebuild key-lookup",
)
def projections() -> None:
    """Inspect and rebuild the read models built from the event store and the streams."""


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _worker_text(worker: dict[str, Any] | None) -> str:
    """`running (seen 2s ago)`, `not running (last seen 5m03s ago)`, `not running (never seen)`."""
    if worker is None:
        return "?"
    if worker["last_seen"] is None:
        return f"{worker['state']} (never seen)"
    ago = _format_seconds(worker["seconds_ago"])
    if worker["state"] == "not running":
        return f"not running (last seen {ago} ago)"
    many = f", {worker['instances']} processes" if worker["instances"] > 1 else ""
    return f"{worker['state']} (seen {ago} ago{many})"


@projections.command("status", epilog="Example: icodrip projections status --json")
@json_option
@click.pass_context
@friendly_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Each projection: live generation, position, lag, its worker (running?), last error.

    A worker is running when its process wrote a heartbeat within the last 15 s.
    """
    settings = settings_from(ctx)
    documents: list[dict[str, Any]] = []
    for projection in assemble_projections(settings).values():
        try:
            documents.append(projection.status().to_dict())
        except Exception as error:  # one broken projection must not hide the others
            documents.append({"name": projection.name, "error": f"{type(error).__name__}"})

    def table() -> None:
        click.echo(
            f"{'NAME':<14}  {'GEN':>3}  {'VIEW':<18}  {'POSITION':>10}  {'HEAD':>10}  "
            f"{'LAG':>8}  {'ROWS':>8}  {'WORKER':<34}  LAST ERROR"
        )
        for d in documents:
            if "error" in d:
                click.echo(f"{d['name']:<14}  status unavailable: {d['error']}")
                continue
            error = d["last_error"] or "-"
            if d["last_error_at"]:
                error = f"{error} ({d['last_error_at']})"
            rows = "-" if d["rows"] is None else str(d["rows"])
            worker = _worker_text(d.get("worker"))
            click.echo(
                f"{d['name']:<14}  {d['generation']:>3}  {d['view']:<18}  {d['position']:>10}  "
                f"{d['head']:>10}  {d['lag']:>8}  {rows:>8}  {worker:<34}  {error}"
            )
            if d["building"] is not None:
                click.echo(
                    f"{'':<14}  generation {d['building']} being built since {d['building_since']}"
                )

    emit({"object": "list", "data": documents}, as_json, table)


class _Progress:
    """Progress on stderr: a bar on a terminal, a line every few seconds otherwise."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.shown = 0
        self.last_line = 0.0

    def __call__(self, progress: RebuildProgress) -> None:
        if self.tty:
            self._bar(progress)
        elif time.monotonic() - self.last_line >= LINE_INTERVAL:
            self.last_line = time.monotonic()
            click.echo(self._line(progress), err=True)

    def _line(self, p: RebuildProgress) -> str:
        return (
            f"{self.name}: {p.fraction:6.1%}  position {p.position:,} of {p.target:,}  "
            f"{p.events:,} events  {p.rate:,.0f} events/s  ETA {_format_seconds(p.eta)}"
        )

    def _bar(self, p: RebuildProgress) -> None:
        if self.bar is None:
            self.bar = click.progressbar(
                length=max(1, p.target - p.start),
                label=f"rebuilding {self.name}",
                file=sys.stderr,
                show_eta=True,
                show_percent=True,
                item_show_func=lambda rate: rate,
            )
            self.bar.__enter__()
        done = min(p.position - p.start, self.bar.length)
        self.bar.length = max(self.bar.length, p.target - p.start)
        self.bar.update(max(0, done - self.shown), f"{p.rate:,.0f} events/s")
        self.shown = max(self.shown, done)

    def close(self, final: RebuildProgress | None) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
        elif final is not None:
            click.echo(self._line(final), err=True)


@projections.command(
    "rebuild",
    epilog="Example: icodrip projections rebuild key-lookup",
)
@click.argument("name", type=click.Choice(sorted(PROJECTION_NAMES)))
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=DEFAULT_GRACE_SECONDS,
    show_default=True,
    help="Seconds to wait after the switch before removing the old copy (readers move first).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=100_000),
    default=1000,
    show_default=True,
    help="Events folded and written per transaction.",
)
@click.option("--force", is_flag=True, help="Take over the claim of a rebuild that died.")
@json_option
@click.pass_context
@friendly_errors
def rebuild(
    ctx: click.Context, name: str, grace: float, batch_size: int, force: bool, as_json: bool
) -> None:
    """Build a fresh copy of NAME beside the live one, switch over, remove the old copy.

    The API keeps serving throughout: it answers from memory and follows the switch.
    Progress (events/s, ETA) goes to stderr.
    """
    settings = settings_from(ctx)
    projection = assemble_projections(settings)[name]
    reporter = _Progress(name)
    last: list[RebuildProgress] = []

    def progress(p: RebuildProgress) -> None:
        last[:] = [p]
        reporter(p)

    try:
        report = projection.rebuild(
            progress=progress, grace=grace, batch_size=batch_size, force=force
        )
    except (RebuildInProgress, SwitchConflict) as error:
        raise CliError(str(error), "rebuild_refused") from error
    finally:
        reporter.close(last[0] if last else None)
    document = report.to_dict()
    click.echo(
        f"{name}: generation {report.live.number} ({report.live.view_name}) is live; "
        f"{report.events:,} events in {report.seconds:.1f} s ({report.rate:,.0f} events/s); "
        f"removed {report.removed}",
        err=True,
    )
    emit(
        document,
        as_json,
        lambda: click.echo(
            f"rebuilt {name}: generation {document['generation']} ({document['view']}), "
            f"position {document['position']}, {document['rows']} rows"
        ),
    )
