"""`icodrip usage`: how an organization's keys (or one key) were used over a recent window.

Read from the usage model (`projections.usage_report.UsageReports` over the live copy, as the
API reads it), as the operator: every organization and both environments.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import click

from application.registry import KeyRegistry
from cli.common import DURATION, emit, json_option, print_table, registry_from, settings_from
from domain.actors import OPERATOR
from domain.errors import DomainError, ValidationError
from domain.ids import format_org_id, parse_key_id, parse_org_id
from projections.usage import COUNTER_FIELDS, PERCENTILES, Granularity, UsageCounters, iso
from projections.usage_live import LiveUsageStore
from projections.usage_query import UsageRow
from projections.usage_report import MAX_SPAN_DAYS, UsageReports, UsageWindow

#: The granularity `--since` picks when none is named: the finest whose rows stay few.
MINUTES_UP_TO = timedelta(hours=6)
HOURS_UP_TO = timedelta(days=7)

COLUMNS = (
    "KEY",
    "NAME",
    "REQUESTS",
    "2XX",
    "4XX",
    "5XX",
    "429",
    "REFUSED",
    "P50 MS",
    "P95 MS",
    "P99 MS",
)
#: The counters shown after KEY and NAME, in `COLUMNS` order.
SHOWN = (*COUNTER_FIELDS, *(name for name, _ in PERCENTILES))


def default_granularity(since: timedelta) -> Granularity:
    """Minutes for up to 6 hours, hours for up to 7 days, days beyond."""
    if since <= MINUTES_UP_TO:
        return Granularity.MINUTE
    if since <= HOURS_UP_TO:
        return Granularity.HOUR
    return Granularity.DAY


def per_key(rows: Sequence[UsageRow]) -> dict[str, UsageCounters]:
    """Each key's counters over the rows (sketches merge exactly), busiest key first."""
    totals: dict[str, UsageCounters] = {}
    for row in rows:
        total = totals.get(row.key_id)
        if total is None:
            total = totals[row.key_id] = UsageCounters()
        total.merge(row.counters)
    return dict(sorted(totals.items(), key=lambda item: (-item[1].requests, item[0])))


def key_name(registry: KeyRegistry, key_id: str) -> str:
    """The key's name, or `-` when the registry does not know the id."""
    try:
        return registry.get_key(parse_key_id(key_id)).name
    except DomainError:
        return "-"


def _cell(value: int | float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _print_table(
    org: str,
    window: UsageWindow,
    keys: dict[str, UsageCounters],
    names: dict[str, str],
    totals: UsageCounters,
) -> None:
    click.echo(
        f"usage of {org} from {iso(window.start)} to {iso(window.end)}, "
        f"by {window.granularity.label}"
    )
    if not keys:
        click.echo("(no requests in this window)")
        return
    lines: list[tuple[str, ...]] = [COLUMNS]
    for key_id, counters in keys.items():
        name = names[key_id]
        name = name if len(name) <= 30 else name[:29] + "…"
        summary = counters.summary()
        lines.append((key_id, name, *(_cell(summary[f]) for f in SHOWN)))
    summary = totals.summary()
    lines.append(("TOTAL", f"{len(keys)} keys", *(_cell(summary[f]) for f in SHOWN)))
    print_table(lines[0], lines[1:], left=2)


@click.command(
    "usage",
    epilog=(
        "\b\nExamples:\n"
        "  icodrip usage --org org_0123…\n"
        "  icodrip usage --org org_0123… --key key_4567… --since 7d\n"
        "  icodrip usage --org org_0123… --since 30m --granularity minute --json\n"
        "\n"
        "The table has one line per key (busiest first) with its requests, 2xx, 4xx, 5xx, "
        "429 (rate limited) and refused (401/403) counts and its p50/p95/p99 latency, then a "
        "total line. --json prints what GET /v1/usage answers: "
        '{"object": "usage", "granularity", "from", "to", "env", "totals", "data", '
        '"next_cursor"}, with every row of the window in data (next_cursor is null): one per '
        "key and bucket (start, key_id, the counters, p50_ms/p95_ms/p99_ms), by key then time; "
        "buckets without a request are left out.\n"
        "\n"
        "The window runs from --since ago to now, widened to whole buckets (UTC). Without "
        "--granularity: minutes up to 6h, hours up to 7d, days beyond. A window spans at most "
        f"{MAX_SPAN_DAYS[Granularity.MINUTE]} days of minutes, "
        f"{MAX_SPAN_DAYS[Granularity.HOUR]} days of hours, "
        f"{MAX_SPAN_DAYS[Granularity.DAY]} days of days."
    ),
)
@click.option("--org", required=True, help="The organization (org_<32 hex digits>).")
@click.option("--key", "key", help="Only this key of the organization (key_<32 hex digits>).")
@click.option(
    "--since",
    type=DURATION,
    default="24h",
    show_default=True,
    help="How far back the window starts, e.g. 30m, 24h, 7d.",
)
@click.option(
    "--granularity",
    type=click.Choice([g.label for g in Granularity], case_sensitive=False),
    help="Bucket size: minute, hour or day (default: from --since, see below).",
)
@json_option
@click.pass_context
def usage(
    ctx: click.Context,
    org: str,
    key: str | None,
    since: timedelta,
    granularity: str | None,
    as_json: bool,
) -> None:
    """Requests, status classes and latency per key of an organization over a recent window."""
    org_id = parse_org_id(org)
    key_id: UUID | None = None if key is None else parse_key_id(key)
    if since <= timedelta(0):
        raise ValidationError("--since must be longer than 0, e.g. 30m, 24h or 7d")
    label = granularity or default_granularity(since).label
    now = time.time()
    window = UsageWindow.of(label, now - since.total_seconds(), None, now=now)
    registry = registry_from(ctx)
    registry.get_organization(org_id)  # an unknown organization is an error, not no usage
    reports = UsageReports(registry, LiveUsageStore(settings_from(ctx)))
    try:
        query = reports.scope(OPERATOR, org_id, window, key_id=key_id)
        rows = list(reports.rows(OPERATOR, org_id, window, key_id=key_id))
        totals = reports.usage.totals(
            query.org_id, window.start, window.end, query.key_ids, query.env
        )
    finally:
        reports.close()
    document: dict[str, Any] = {
        "object": "usage",
        "granularity": window.granularity.label,
        "from": iso(window.start),
        "to": iso(window.end),
        "env": query.env,
        "totals": totals.summary(),
        "data": [row.as_dict() for row in rows],
        "next_cursor": None,  # every row of the window is printed
    }

    def table() -> None:
        keys = per_key(rows)
        names = {k: key_name(registry, k) for k in keys}
        _print_table(format_org_id(org_id), window, keys, names, totals)

    emit(document, as_json, table)
