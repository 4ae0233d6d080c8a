"""`icodrip audit`: check the request audit's hash chains; replay it from the stream and compare."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from adapters import nats as nats_adapter
from adapters.request_events import AUDIT_STREAM
from adapters.settings import Settings
from cli.common import CliError, Group, emit, json_option, settings_from
from domain.errors import ValidationError
from domain.ids import parse_org_id
from projections.audit_chain import Comparison, compare_rows
from projections.request_audit import NO_ORG
from projections.request_audit_live import open_live_audit_store
from projections.request_audit_query import ChainReport, RequestAuditStore
from projections.request_audit_store import open_request_audit_store
from projections.request_audit_stream import copy_stream

BROKEN = 1


class Progress:
    """One overwritten line on stderr: count, rate, and an optional total."""

    def __init__(
        self, what: str, total: int | None = None, every: float = 0.5, unit: str = "events"
    ) -> None:
        self.what = what
        self.unit = unit
        self.total = total
        self.every = every
        self.started = self.shown = time.monotonic()
        self.interactive = sys.stderr.isatty()

    def rate(self, done: int) -> float:
        return done / max(time.monotonic() - self.started, 1e-9)

    def update(self, done: int, detail: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.shown < self.every:
            return
        self.shown = now
        total = f"/{self.total:,}" if self.total else ""
        unit = self.unit
        line = f"{self.what}: {done:,}{total} {unit}, {self.rate(done):,.0f} {unit}/s {detail}"
        if self.interactive:
            click.echo(f"\r{line.rstrip()}\033[K", err=True, nl=False)
        else:
            click.echo(line.rstrip(), err=True)

    def done(self, done: int, detail: str = "") -> None:
        self.update(done, detail, force=True)
        if self.interactive:
            click.echo("", err=True)


@click.group(
    "audit",
    cls=Group,
    epilog="Examples: icodrip audit verify --org org_0123… · icodrip audit replay --json",
)
def audit() -> None:
    """The request audit: verify its hash chains, replay it from the stream."""


def _org_option(org: str | None) -> str | None:
    if org is None or org == NO_ORG:
        return org
    try:
        parse_org_id(org)
    except ValidationError as error:
        raise CliError(error.message, "validation_error") from None
    return org


def _describe(report: ChainReport) -> str:
    b = report.broken
    assert b is not None
    where = f"at sequence {b.seq}" + (f" (event {b.event_id})" if b.event_id else "")
    return f"BROKEN  {report.org_id}  {where}: {b.problem}: {b.detail}"


@audit.command(
    "verify",
    epilog="Exit status: 0 every chain intact, 1 a chain is broken. "
    "Example: icodrip audit verify --org org_0f3c…",
)
@click.option("--org", help="Only this organization's chain (org_…, or `none` for unknown keys).")
@json_option
@click.pass_context
def verify(ctx: click.Context, org: str | None, as_json: bool) -> None:
    """Walk each organization's hash chain and report its first broken link."""
    org = _org_option(org)
    store = open_live_audit_store(settings_from(ctx))
    progress = Progress("verified", unit="rows", every=1.0)
    try:
        reports = store.verify(org, progress=progress.update)
    finally:
        store.close()
    rows = sum(r.rows for r in reports)
    progress.done(rows)
    broken = [r for r in reports if r.broken is not None]
    document = {
        "intact": not broken,
        "chains": len(reports),
        "rows": rows,
        "broken": [r.as_dict() for r in broken],
        "results": [r.as_dict() for r in reports],
    }

    def human() -> None:
        for report in broken:
            click.echo(_describe(report))
        if not reports:
            click.echo("no audit rows" + (f" for {org}" if org else ""))
        elif broken:
            click.echo(f"{len(broken)} of {len(reports)} chains broken ({rows:,} rows checked)")
        else:
            click.echo(f"all {len(reports)} chains intact ({rows:,} rows)")

    emit(document, as_json, human)
    ctx.exit(BROKEN if broken else 0)


# -- replay -------------------------------------------------------------------------------------


async def replay_stream(
    settings: Settings,
    scratch: RequestAuditStore,
    on_progress: Callable[[int, int, int], None],
    *,
    batch: int = 256,
) -> tuple[int, int, int]:
    """Ingest the whole audit stream into `scratch`; (first_seq, last_seq, events)."""
    assert settings.nats_url is not None
    client = await nats_adapter.connect(settings.nats_url, name="icodrip-audit-replay", wait=10)
    try:
        js = client.jetstream()
        state = (await js.stream_info(AUDIT_STREAM)).state
        first, last = state.first_seq, state.last_seq
        if state.messages == 0:
            return first, last, 0
        events = await copy_stream(
            js,
            scratch,
            start=first,
            last=last,
            on_batch=lambda done, at: on_progress(done, at, last),
            batch=batch,
        )
        return first, last, events
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def compare_stores(
    live: RequestAuditStore, scratch: RequestAuditStore, first: int, upto: int
) -> Comparison:
    with (
        live.rows_by_event_id(upto, first) as live_rows,
        scratch.rows_by_event_id(upto, first) as replayed,
    ):
        return compare_rows(live_rows, replayed)


@audit.command(
    "replay",
    epilog="Exit status: 0 the live model matches the stream, 1 it differs. "
    "Needs ICODRIP_NATS_URL.",
)
@click.option("--keep", is_flag=True, help="Keep the scratch copy (its name is printed).")
@json_option
@click.pass_context
def replay(ctx: click.Context, keep: bool, as_json: bool) -> None:
    """Rebuild the audit model from the stream into a scratch copy and compare it with the live one.

    Compares every event the stream still holds, by event id and content; progress (events/s)
    goes to stderr. Rows whose chain position differs only because they were ingested in
    another order (after a worker crash) are counted as `reordered`, not as differences.
    """
    settings = settings_from(ctx)
    if not settings.nats_url:
        raise CliError("ICODRIP_NATS_URL is not set (the stream to replay from)", "settings_error")
    scratch_name = f"AuditReplay{secrets.token_hex(4)}"
    live = open_live_audit_store(settings)
    scratch = open_request_audit_store(settings, scratch_name)
    progress = Progress("replayed")
    started = time.monotonic()
    try:

        def on_progress(events: int, position: int, last: int) -> None:
            progress.update(events, f"(stream {position:,}/{last:,})")

        first, last, events = asyncio.run(replay_stream(settings, scratch, on_progress))
        progress.done(events, f"(stream {last:,}/{last:,})")
        replay_seconds = time.monotonic() - started
        live_position = live.position()
        upto = min(last, live_position)
        comparison = compare_stores(live, scratch, first, upto)
    finally:
        live.close()
        if keep:
            scratch.close()
        else:
            with contextlib.suppress(Exception):
                scratch.drop()
    document: dict[str, Any] = {
        "identical": not comparison.differs,
        "stream": {"name": AUDIT_STREAM, "first_seq": first, "last_seq": last},
        "live_position": live_position,
        "compared_up_to": upto,
        "replayed_events": events,
        "replay_seconds": round(replay_seconds, 3),
        "events_per_second": round(events / max(replay_seconds, 1e-9)),
        "compared": comparison.compared,
        "missing_in_live": comparison.missing_in_live,
        "extra_in_live": comparison.extra_in_live,
        "changed": comparison.changed,
        "reordered": comparison.reordered,
        "examples": comparison.examples,
        "scratch": scratch_name if keep else None,
    }

    def human() -> None:
        if live_position < last:
            click.echo(
                f"note: the live model is at stream position {live_position:,} of {last:,}; "
                f"compared messages {first:,}..{upto:,}"
            )
        for example in comparison.examples:
            details = ", ".join(f"{k}={v}" for k, v in example.items() if k not in ("kind",))
            click.echo(f"  {example['kind']}: {details}")
        verdict = "differs from" if comparison.differs else "matches"
        click.echo(
            f"live audit model {verdict} the stream: {comparison.compared:,} events compared, "
            f"{comparison.missing_in_live} missing, {comparison.extra_in_live} extra, "
            f"{comparison.changed} changed, {comparison.reordered} reordered"
        )
        if keep:
            click.echo(f"scratch copy kept as {scratch_name}")

    emit(document, as_json, human)
    ctx.exit(BROKEN if comparison.differs else 0)
