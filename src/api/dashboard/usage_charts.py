"""Usage charts drawn on the server as SVG: the keys list's sparklines, a key's page charts.

Pure (no I/O): buckets in, markup out. What comes out is well-formed XML (the tests parse it)
and passes the dashboard's strict Content-Security-Policy: no `style` attribute, no `<style>`,
no script. Colours are SVG presentation attributes (`fill=`, `stroke=`), which are not CSS;
sizes come from classes in `static/dashboard.css`.

A chart's plot is an `<svg>` with a `viewBox` of one unit per bucket column and
`preserveAspectRatio="none"`: it stretches to the width it is given (a 390 px phone or a
desktop), its lines keep their width (`vector-effect="non-scaling-stroke"`), and its text, the
axis labels and the legend, is HTML beside it, so it stays readable at any width. Every bucket
is a `<g class="bucket">` with a `<title>` (the tooltip) and its numbers as `data-` attributes;
the plot has a `<title>` and `<desc>` saying what it shows and the totals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from markupsafe import Markup, escape

from projections.usage import Granularity, UsageCounters, iso

#: Status classes, stacked bottom-up: (key, legend label, fill).
CLASSES = (
    ("2xx", "2xx", "#37b24d"),
    ("4xx", "4xx (not 429)", "#f59f00"),
    ("429", "429 rate-limited", "#ae3ec9"),
    ("5xx", "5xx", "#e03131"),
    ("other", "1xx/3xx", "#adb5bd"),
)
FILL = {name: fill for name, _, fill in CLASSES}
LATENCY_LINES = (("p50", "p50", "#3b5bdb"), ("p99", "p99", "#e8590c"))
GRID = "#dee2e6"
SPARK_FILL = "#748ffc"
#: Width of one bucket's column in the plots' user units; bars take the middle of it.
COLUMN = 10
BAR_GAP = 1.5
PLOT_HEIGHT = 100


class Bucket(NamedTuple):
    """One bucket of one key's usage, as the charts and the table show it."""

    start: int  # Unix seconds, aligned to the granularity
    requests: int = 0
    success: int = 0
    client_errors: int = 0  # every 4xx, the 429s among them
    server_errors: int = 0
    rate_limited: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None

    @classmethod
    def counts_of(cls, start: int, counters: UsageCounters) -> Bucket:
        """The bucket starting at `start` with these counts, without percentiles: what a
        sparkline draws (a percentile reads the whole latency sketch)."""
        return cls(start, *counters.counts()[:5])  # requests … rate_limited, in field order

    @classmethod
    def of(cls, start: int, counters: UsageCounters) -> Bucket:
        """The bucket starting at `start` with these counters (percentiles as the API's)."""
        summary = counters.summary()
        p50, p99 = _float(summary["p50_ms"]), _float(summary["p99_ms"])
        return cls(start, *counters.counts()[:5], p50, p99)

    def by_class(self) -> dict[str, int]:
        """The requests by class as stacked: 4xx without the 429s, 1xx/3xx as `other`."""
        other = self.requests - self.success - self.client_errors - self.server_errors
        return {
            "2xx": self.success,
            "4xx": self.client_errors - self.rate_limited,
            "429": self.rate_limited,
            "5xx": self.server_errors,
            "other": max(0, other),
        }


def _float(value: int | float | None) -> float | None:
    return None if value is None else float(value)


# -- numbers and times for people ----------------------------------------------------------------


def count(n: int | float) -> str:
    """A count in full with thousands separators: `12,345`."""
    return f"{int(n):,}"


def compact(n: float) -> str:
    """An axis label: `950`, `12k`, `1.5M`."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            text = f"{n / size:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return f"{n:g}"


def ms(value: float | None) -> str:
    """A latency: `0.42 ms`, `3.1 ms`, `45 ms`, `1.2 s`; `—` for none."""
    if value is None:
        return "—"
    if value >= 1000:
        return f"{value / 1000:.2g} s" if value < 10_000 else f"{value / 1000:.0f} s"
    if value >= 10:
        return f"{value:.0f} ms"
    if value >= 1:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def bucket_label(start: int, granularity: Granularity, *, short: bool = False) -> str:
    """A bucket's start in UTC: `2026-03-01 13:00` (`01 Mar 13:00` short); days without time."""
    moment = datetime.fromtimestamp(start, UTC)
    if granularity is Granularity.DAY:
        return moment.strftime("%d %b" if short else "%Y-%m-%d")
    return moment.strftime("%d %b %H:%M" if short else "%Y-%m-%d %H:%M")


def nice_ceiling(value: float, *, least: float = 0.0) -> float:
    """The axis top: the least of 1, 2, 4, 6, 8 times 10^k at or above `value` and `least`."""
    value = max(value, least)
    if value <= 0:
        return max(1.0, least)
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 4, 6, 8, 10):
        top = step * power
        if top >= value * (1 - 1e-9):
            return float(top)
    return 10 * power  # pragma: no cover - the loop ends at 10 * power >= value


# -- markup ----------------------------------------------------------------------------------------


def _attrs(**values: object) -> str:
    """` name="value"` pairs, escaped; `data_x` → `data-x`; None left out."""
    return "".join(
        f' {name.rstrip("_").replace("_", "-")}="{escape(str(value))}"'
        for name, value in values.items()
        if value is not None
    )


def _n(value: float) -> str:
    """A coordinate, short: `12`, `12.5`, `0.125`."""
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def _rect(x: float, y: float, width: float, height: float, fill: str, **extra: object) -> str:
    size = _attrs(x=_n(x), y=_n(y), width=_n(width), height=_n(height), fill=fill, **extra)
    return f"<rect{size}/>"


def _grid(width: int, rows: int) -> str:
    lines = []
    for i in range(rows + 1):
        y = _n(PLOT_HEIGHT * i / rows)
        lines.append(
            f'<line x1="0" x2="{width}" y1="{y}" y2="{y}" stroke="{GRID}" stroke-width="1"'
            ' vector-effect="non-scaling-stroke"/>'
        )
    return "".join(lines)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    entries = "".join(
        f'<li><svg class="swatch" viewBox="0 0 10 10" aria-hidden="true">'
        f'<rect width="10" height="10" rx="2" fill="{fill}"/></svg>{escape(label)}</li>'
        for label, fill in items
    )
    return f'<ul class="legend">{entries}</ul>'


def _axes(
    top: str, middle: str, buckets: Sequence[Bucket], granularity: Granularity
) -> tuple[str, str]:
    """The HTML around a plot: y labels to its left, first/middle/last bucket below it."""
    y = (
        '<div class="chart-y" aria-hidden="true">'
        f"<span>{top}</span><span>{middle}</span><span>0</span></div>"
    )
    ends = [buckets[0], buckets[len(buckets) // 2], buckets[-1]] if buckets else []
    x = "".join(
        f"<span>{escape(bucket_label(b.start, granularity, short=True))}</span>" for b in ends
    )
    return y, f'<div class="chart-x" aria-hidden="true">{x}</div>'


def _figure(
    chart_id: str, y_axis: str, plot: str, x_axis: str, legend: str, extra: str = ""
) -> Markup:
    # Every value in the parts was escaped where it was put in (`escape`, `_attrs`).
    return Markup(  # noqa: S704
        f'<figure class="chart" id="{escape(chart_id)}"><div class="chart-body">'
        f'{y_axis}<div class="chart-plot">{plot}{extra}</div><div></div>{x_axis}</div>'
        f"{legend}</figure>"
    )


def _svg_open(chart_id: str, width: int, css: str, title: str, desc: str) -> str:
    chart_id = escape(chart_id)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css}" viewBox="0 0 {width} {PLOT_HEIGHT}"'
        f' preserveAspectRatio="none" role="img"'
        f' aria-labelledby="{chart_id}-title {chart_id}-desc">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>'
    )


# -- the charts ------------------------------------------------------------------------------------


def totals_of(buckets: Sequence[Bucket]) -> Bucket:
    """The buckets' counts summed (no percentiles: those are not sums)."""
    return Bucket(
        buckets[0].start if buckets else 0,
        sum(b.requests for b in buckets),
        sum(b.success for b in buckets),
        sum(b.client_errors for b in buckets),
        sum(b.server_errors for b in buckets),
        sum(b.rate_limited for b in buckets),
    )


def describe(b: Bucket) -> str:
    """`120 requests: 100 2xx, 15 4xx (5 rate-limited), 0 5xx`."""
    return (
        f"{count(b.requests)} requests: {count(b.success)} 2xx, "
        f"{count(b.client_errors)} 4xx ({count(b.rate_limited)} rate-limited), "
        f"{count(b.server_errors)} 5xx"
    )


def requests_chart(
    buckets: Sequence[Bucket], granularity: Granularity, *, chart_id: str, period: str
) -> Markup:
    """Requests per bucket stacked by status class, and a strip marking buckets with 429s."""
    width = max(1, len(buckets)) * COLUMN
    top = nice_ceiling(max((b.requests for b in buckets), default=0), least=2)
    per = granularity.label
    total = totals_of(buckets)
    parts = [
        _svg_open(
            chart_id,
            width,
            "chart-svg",
            f"Requests per {per} by status, {period} (UTC)",
            f"{describe(total)}.",
        ),
        _grid(width, 2),
    ]
    for i, b in enumerate(buckets):
        x = i * COLUMN
        label = f"{bucket_label(b.start, granularity)} UTC: {describe(b)}"
        parts.append(
            '<g class="bucket"'
            + _attrs(
                data_start=iso(b.start),
                data_requests=b.requests,
                data_success=b.success,
                data_client_errors=b.client_errors,
                data_server_errors=b.server_errors,
                data_rate_limited=b.rate_limited,
            )
            + f"><title>{escape(label)}</title>"
        )
        parts.append(_rect(x, 0, COLUMN, PLOT_HEIGHT, "#000", fill_opacity=0))  # the hover area
        base: float = PLOT_HEIGHT
        for name, n in b.by_class().items():
            if n:
                height = PLOT_HEIGHT * n / top
                base -= height
                css = f"bar-{name}"
                parts.append(
                    _rect(x + BAR_GAP / 2, base, COLUMN - BAR_GAP, height, FILL[name], class_=css)
                )
        parts.append("</g>")
    parts.append("</svg>")
    marks = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-marks" viewBox="0 0 {width} 10"'
        ' preserveAspectRatio="none" aria-hidden="true">'
    ]
    for i, b in enumerate(buckets):
        if b.rate_limited:
            marks.append(_rect(i * COLUMN + BAR_GAP / 2, 0, COLUMN - BAR_GAP, 10, FILL["429"]))
    marks.append("</svg>")
    y_axis, x_axis = _axes(compact(top), compact(top / 2), buckets, granularity)
    shown = {name for b in buckets for name, n in b.by_class().items() if n} | {"2xx", "429"}
    legend = _legend([(label, fill) for name, label, fill in CLASSES if name in shown])
    return _figure(chart_id, y_axis, "".join(parts), x_axis, legend, "".join(marks))


def latency_chart(
    buckets: Sequence[Bucket], granularity: Granularity, *, chart_id: str, period: str
) -> Markup:
    """p50 and p99 per bucket as step lines; buckets without requests leave a gap."""
    width = max(1, len(buckets)) * COLUMN
    highest = max((b.p99_ms or 0.0 for b in buckets), default=0.0)
    top = nice_ceiling(highest)
    worst = max(buckets, key=lambda b: b.p99_ms or 0.0, default=None)
    desc = (
        "No requests."
        if worst is None or worst.p99_ms is None
        else f"Highest p99 {ms(worst.p99_ms)} at {bucket_label(worst.start, granularity)} UTC."
    )
    parts = [
        _svg_open(
            chart_id,
            width,
            "chart-svg",
            f"Latency per {granularity.label}, p50 and p99, {period} (UTC)",
            desc,
        ),
        _grid(width, 2),
    ]
    for i, b in enumerate(buckets):
        label = f"{bucket_label(b.start, granularity)} UTC: p50 {ms(b.p50_ms)}, p99 {ms(b.p99_ms)}"
        parts.append(
            '<g class="bucket"'
            + _attrs(data_start=iso(b.start), data_p50_ms=b.p50_ms, data_p99_ms=b.p99_ms)
            + f"><title>{escape(label)}</title>"
            + _rect(i * COLUMN, 0, COLUMN, PLOT_HEIGHT, "#000", fill_opacity=0)
            + "</g>"
        )
    for name, _, stroke in LATENCY_LINES:
        values = [b.p50_ms if name == "p50" else b.p99_ms for b in buckets]
        path = step_path(values, top)
        if path:
            parts.append(
                f'<path class="line-{name}" d="{path}" fill="none" stroke="{stroke}"'
                ' stroke-width="2" stroke-linejoin="round" vector-effect="non-scaling-stroke"/>'
            )
    parts.append("</svg>")
    y_axis, x_axis = _axes(escape(ms(top)), escape(ms(top / 2)), buckets, granularity)
    legend = _legend([(label, stroke) for _, label, stroke in LATENCY_LINES])
    return _figure(chart_id, y_axis, "".join(parts), x_axis, legend)


def step_path(values: Sequence[float | None], top: float) -> str:
    """A step line over the columns: flat across each bucket, a gap where there is no value."""
    commands: list[str] = []
    previous: float | None = None
    for i, value in enumerate(values):
        if value is None:
            previous = None
            continue
        y = _n(PLOT_HEIGHT - PLOT_HEIGHT * min(value, top) / top)
        if previous is None:
            commands.append(f"M{i * COLUMN} {y}")
        else:
            commands.append(f"V{y}")
        commands.append(f"H{(i + 1) * COLUMN}")
        previous = value
    return "".join(commands)


def sparkline(buckets: Sequence[Bucket], *, label: str) -> Markup:
    """A key's requests per bucket as small bars; buckets with 429s marked beneath them."""
    width = max(1, len(buckets)) * COLUMN
    top = max((b.requests for b in buckets), default=0) or 1
    total = totals_of(buckets)
    title = f"{label}: {describe(total)}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" viewBox="0 0 {width} 24"'
        ' preserveAspectRatio="none" role="img"'
        + _attrs(
            aria_label=title,
            data_start=iso(buckets[0].start) if buckets else None,
            data_requests=total.requests,
            data_rate_limited=total.rate_limited,
        )
        + f"><title>{escape(title)}</title>"
        f'<line x1="0" x2="{width}" y1="19.5" y2="19.5" stroke="{GRID}" stroke-width="1"'
        ' vector-effect="non-scaling-stroke"/>'
    ]
    for i, b in enumerate(buckets):
        x = i * COLUMN + BAR_GAP / 2
        if b.requests:
            height = max(1.5, 19 * b.requests / top)
            parts.append(_rect(x, 19 - height, COLUMN - BAR_GAP, height, SPARK_FILL))
        if b.rate_limited:
            parts.append(_rect(x, 20.5, COLUMN - BAR_GAP, 3.5, FILL["429"], class_="spark-429"))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value in it was escaped where put in
