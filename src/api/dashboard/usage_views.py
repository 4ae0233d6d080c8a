"""What the usage parts of the key pages show: the ranges offered, the windows they read, the
keys list's sparklines and a key's charts, totals and table, and the CSV of a key's usage.

Pure (no I/O): the key pages read the usage model (`projections.usage_report`) and hand its
rows here. Buckets are whole hours or days in UTC, as the model keeps them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from api.dashboard import usage_charts
from api.dashboard.usage_charts import Bucket, bucket_label, ms
from api.routes import usage as usage_routes
from domain.errors import ValidationError
from projections.usage import Granularity, UsageCounters, iso
from projections.usage_query import UsageRow
from projections.usage_report import UsageReport, UsageWindow, dense


class UsageRange(msgspec.Struct, frozen=True):
    """A range a key's page offers: its query value, its name, its length, its granularities
    (the first is the default)."""

    value: str
    label: str
    seconds: int
    granularities: tuple[Granularity, ...]


#: The ranges a key's page offers; the first is the default.
USAGE_RANGES = (
    UsageRange("24h", "last 24 hours", 86_400, (Granularity.HOUR,)),
    UsageRange("7d", "last 7 days", 7 * 86_400, (Granularity.DAY, Granularity.HOUR)),
    UsageRange("30d", "last 30 days", 30 * 86_400, (Granularity.DAY,)),
)
#: The keys list's sparklines: the last 24 hours, by hour.
SPARK_RANGE = USAGE_RANGES[0]


class UsageLink(msgspec.Struct, frozen=True):
    """A link to another range or granularity of the same page (no script needed)."""

    label: str
    href: str
    current: bool


class UsageTotals(msgspec.Struct, frozen=True, kw_only=True):
    """A window's totals, as the line above the charts says them."""

    requests: int
    success: int
    client_errors: int
    server_errors: int
    rate_limited: int
    p50_ms: float | None
    p99_ms: float | None
    p50: str
    p99: str


class UsageRowView(msgspec.Struct, frozen=True, kw_only=True):
    """One bucket in the table under the charts."""

    start: str  # ISO-8601, UTC
    label: str
    requests: int
    success: int
    client_errors: int
    server_errors: int
    rate_limited: int
    p50: str
    p99: str


class KeyUsage(msgspec.Struct, frozen=True, kw_only=True):
    """A key's usage over the chosen range: totals, two charts, the numbers, a CSV link."""

    range: str
    range_label: str
    granularity: str
    ranges: tuple[UsageLink, ...]
    granularities: tuple[UsageLink, ...]
    totals: UsageTotals
    requests_chart: str  # markup (usage_charts)
    latency_chart: str
    rows: tuple[UsageRowView, ...]  # the buckets with requests, oldest first
    buckets: int
    csv_href: str


class KeySpark(msgspec.Struct, frozen=True, kw_only=True):
    """A key's last 24 hours in the keys list: a sparkline and its 429s."""

    requests: int
    rate_limited: int
    svg: str  # markup (usage_charts)


def usage_choice(range_value: str | None, by: str | None) -> tuple[UsageRange, Granularity]:
    """The range and granularity a key page's query asks for (defaults when absent);
    ValidationError for what its links cannot have sent."""
    choices = {choice.value: choice for choice in USAGE_RANGES}
    choice = choices.get(range_value or USAGE_RANGES[0].value)
    if choice is None:
        raise ValidationError("choose a usage range from the list (24h, 7d or 30d)")
    if not by:
        return choice, choice.granularities[0]
    granularity = next((g for g in choice.granularities if g.label == by), None)
    if granularity is None:
        labels = " or ".join(g.label for g in choice.granularities)
        raise ValidationError(f"usage over {choice.label} is by {labels}")
    return choice, granularity


def usage_window(choice: UsageRange, granularity: Granularity, now: float) -> UsageWindow:
    """The whole buckets of the range, the last one holding `now`."""
    size = granularity.seconds
    buckets = max(1, choice.seconds // size)
    return UsageWindow.of(
        granularity.label, granularity.align(now) - (buckets - 1) * size, None, now=now
    )


def buckets_of(counters: Sequence[UsageCounters] | None, window: UsageWindow) -> list[Bucket]:
    """A key's dense counters (`usage_report.dense`) as chart buckets; none: all empty."""
    if counters is None:
        return [Bucket(start) for start in window.buckets]
    return [Bucket.of(start, c) for start, c in zip(window.buckets, counters, strict=True)]


def key_sparks(rows: Iterable[UsageRow], window: UsageWindow) -> dict[str, KeySpark]:
    """Each key's sparkline (by `key_…` id) from the organization's rows of `window`: counts
    only (a sparkline shows no latency, and a thousand keys' percentiles cost a second)."""
    sparks = {}
    for key_id, counters in dense(rows, window).items():
        buckets = [
            Bucket.counts_of(start, c) for start, c in zip(window.buckets, counters, strict=True)
        ]
        total = usage_charts.totals_of(buckets)
        svg = usage_charts.sparkline(buckets, label=f"Requests per hour, {SPARK_RANGE.label}")
        sparks[key_id] = KeySpark(requests=total.requests, rate_limited=total.rate_limited, svg=svg)
    return sparks


def totals_view(counters: UsageCounters) -> UsageTotals:
    """A window's totals, percentiles as the API gives them."""
    summary = counters.summary()
    p50, p99 = summary["p50_ms"], summary["p99_ms"]
    p50_ms = None if p50 is None else float(p50)
    p99_ms = None if p99 is None else float(p99)
    return UsageTotals(
        requests=counters.requests,
        success=counters.success,
        client_errors=counters.client_errors,
        server_errors=counters.server_errors,
        rate_limited=counters.rate_limited,
        p50_ms=p50_ms,
        p99_ms=p99_ms,
        p50=ms(p50_ms),
        p99=ms(p99_ms),
    )


def _href(path: str, choice: UsageRange, granularity: Granularity) -> str:
    query = f"range={choice.value}"
    if granularity is not choice.granularities[0]:
        query += f"&by={granularity.label}"
    return f"{path}?{query}#usage"


def key_usage(
    key_id: str,
    choice: UsageRange,
    granularity: Granularity,
    report: UsageReport,
) -> KeyUsage:
    """A key's usage section over `report` (its rows: this key's, in one page)."""
    window = report.window
    buckets = buckets_of(dense(report.rows, window).get(key_id), window)
    path = f"/dashboard/keys/{key_id}"
    ranges = tuple(
        UsageLink(c.label.removeprefix("last "), _href(path, c, c.granularities[0]), c is choice)
        for c in USAGE_RANGES
    )
    granularities = tuple(
        UsageLink(f"by {g.label}", _href(path, choice, g), g is granularity)
        for g in choice.granularities
        if len(choice.granularities) > 1
    )
    rows = tuple(
        UsageRowView(
            start=iso(b.start),
            label=bucket_label(b.start, granularity),
            requests=b.requests,
            success=b.success,
            client_errors=b.client_errors,
            server_errors=b.server_errors,
            rate_limited=b.rate_limited,
            p50=ms(b.p50_ms),
            p99=ms(b.p99_ms),
        )
        for b in buckets
        if b.requests
    )
    csv_href = f"{path}/usage.csv?range={choice.value}&by={granularity.label}"
    return KeyUsage(
        range=choice.value,
        range_label=choice.label,
        granularity=granularity.label,
        ranges=ranges,
        granularities=granularities,
        totals=totals_view(report.totals),
        requests_chart=usage_charts.requests_chart(
            buckets, granularity, chart_id="usage-requests", period=choice.label
        ),
        latency_chart=usage_charts.latency_chart(
            buckets, granularity, chart_id="usage-latency", period=choice.label
        ),
        rows=rows,
        buckets=len(buckets),
        csv_href=csv_href,
    )


#: The CSV's columns: `GET /v1/usage`'s export's, but for the key (one key's usage per file).
CSV_COLUMNS = tuple(column for column in usage_routes.CSV_COLUMNS if column != "key_id")


def usage_csv(counters: Sequence[UsageCounters] | None, window: UsageWindow) -> str:
    """Every bucket of the window (empty ones too), one line each, with a header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    cells = counters if counters is not None else [UsageCounters() for _ in window.buckets]
    for start, cell in zip(window.buckets, cells, strict=True):
        summary: Mapping[str, object] = cell.summary()
        writer.writerow(
            [iso(start), *("" if summary[c] is None else summary[c] for c in CSV_COLUMNS[1:])]
        )
    return out.getvalue()
