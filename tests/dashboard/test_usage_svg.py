"""The usage charts' pure parts: SVG drawn from buckets, the ranges and windows a key's page
offers, its totals, table and CSV. No server, no browser (tests/dashboard/test_usage_charts.py
drives those)."""

from __future__ import annotations

import csv
import io
import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from api.dashboard.usage_charts import (
    COLUMN,
    FILL,
    PLOT_HEIGHT,
    Bucket,
    compact,
    latency_chart,
    ms,
    nice_ceiling,
    requests_chart,
    sparkline,
)
from api.dashboard.usage_views import (
    CSV_COLUMNS,
    USAGE_RANGES,
    key_sparks,
    key_usage,
    usage_choice,
    usage_csv,
    usage_window,
)
from domain.errors import ValidationError
from projections.usage import Granularity, LatencySketch, UsageCounters, iso
from projections.usage_query import UsageRow
from projections.usage_report import UsageReport

SVG = "{http://www.w3.org/2000/svg}"
HOUR, DAY = Granularity.HOUR, Granularity.DAY
NOW = datetime(2026, 3, 1, 12, 34, 56, tzinfo=UTC).timestamp()
KEY = "key_" + "1" * 32
OTHER = "key_" + "2" * 32


def parse(markup: str) -> ET.Element:
    """The markup as XML: it must be well-formed (HTML around SVG, every value escaped)."""
    return ET.fromstring(markup)


def counters(statuses: dict[int, int], latency_ms: float = 5.0) -> UsageCounters:
    cell = UsageCounters(env="live")
    for status, n in statuses.items():
        for _ in range(n):
            cell.count(status, latency_ms)
    return cell


def buckets_of_hours(*cells: UsageCounters | None) -> list[Bucket]:
    start = HOUR.align(NOW) - (len(cells) - 1) * 3600
    return [
        Bucket(start + i * 3600) if c is None else Bucket.of(start + i * 3600, c)
        for i, c in enumerate(cells)
    ]


def assert_csp_safe(markup: str) -> None:
    """Nothing the dashboard's Content-Security-Policy would refuse: no inline CSS or script."""
    assert not re.search(r"\sstyle=", markup), "an inline style attribute"
    assert "<style" not in markup and "<script" not in markup
    assert not re.search(r"\son\w+=", markup), "an inline event handler"


# -- the requests chart ----------------------------------------------------------------------


def test_the_requests_chart_stacks_each_bucket_by_status_class_to_its_total() -> None:
    buckets = buckets_of_hours(
        counters({200: 30, 404: 4, 429: 6, 500: 2, 302: 1}),
        None,
        counters({200: 10}),
    )
    markup = requests_chart(buckets, HOUR, chart_id="rq", period="last 3 hours")
    assert_csp_safe(markup)
    figure = parse(markup)
    svg = figure.find(f".//{SVG}svg[@class='chart-svg']")
    assert svg is not None
    assert svg.get("viewBox") == f"0 0 {3 * COLUMN} {PLOT_HEIGHT}"
    assert svg.get("role") == "img" and svg.get("aria-labelledby") == "rq-title rq-desc"
    assert svg.findtext(f"{SVG}title") == "Requests per hour by status, last 3 hours (UTC)"
    assert svg.findtext(f"{SVG}desc") == ("53 requests: 40 2xx, 10 4xx (6 rate-limited), 2 5xx.")
    groups = svg.findall(f"{SVG}g[@class='bucket']")
    assert [g.get("data-start") for g in groups] == [iso(b.start) for b in buckets]
    assert [int(g.get("data-requests") or -1) for g in groups] == [43, 0, 10]
    first = groups[0]
    assert {k: first.get(k) for k in first.attrib if k.startswith("data-")} == {
        "data-start": iso(buckets[0].start),
        "data-requests": "43",
        "data-success": "30",
        "data-client-errors": "10",
        "data-server-errors": "2",
        "data-rate-limited": "6",
    }
    assert "43 requests: 30 2xx, 10 4xx (6 rate-limited), 2 5xx" in (
        first.findtext(f"{SVG}title") or ""
    )
    # The axis top is a round number at or above the busiest bucket; the bars reach their totals.
    top = nice_ceiling(43)
    assert top == 60
    bars = {r.get("class"): r for r in first.findall(f"{SVG}rect") if r.get("class")}
    assert set(bars) == {"bar-2xx", "bar-4xx", "bar-429", "bar-5xx", "bar-other"}
    heights = {name: float(r.get("height") or 0) for name, r in bars.items()}
    assert heights["bar-2xx"] == pytest.approx(PLOT_HEIGHT * 30 / top, abs=1e-3)
    assert heights["bar-4xx"] == pytest.approx(PLOT_HEIGHT * 4 / top, abs=1e-3)  # 429s apart
    assert heights["bar-429"] == pytest.approx(PLOT_HEIGHT * 6 / top, abs=1e-3)
    assert sum(heights.values()) == pytest.approx(PLOT_HEIGHT * 43 / top, abs=1e-2)
    stack_top = min(float(r.get("y") or 0) for r in bars.values())
    assert stack_top == pytest.approx(PLOT_HEIGHT - PLOT_HEIGHT * 43 / top, abs=1e-2)
    assert bars["bar-429"].get("fill") == FILL["429"]
    assert not [r for r in groups[1].findall(f"{SVG}rect") if r.get("class")]  # no requests
    # The 429 strip marks the first bucket only; the axis labels are HTML, not SVG text.
    marks = figure.find(f".//{SVG}svg[@class='chart-marks']")
    assert marks is not None and len(marks.findall(f"{SVG}rect")) == 1
    y_labels = [s.text for s in figure.iterfind(".//div[@class='chart-y']/span")]
    assert y_labels == ["60", "30", "0"]
    x_labels = [s.text for s in figure.iterfind(".//div[@class='chart-x']/span")]
    assert x_labels == ["01 Mar 10:00", "01 Mar 11:00", "01 Mar 12:00"]
    legend = [li.tail or "".join(li.itertext()) for li in figure.iterfind(".//ul/li")]
    assert "429 rate-limited" in "".join(legend) and "1xx/3xx" in "".join(legend)


def test_a_chart_of_no_requests_still_draws_every_bucket_and_a_sane_axis() -> None:
    buckets = buckets_of_hours(*([None] * 24))
    figure = parse(requests_chart(buckets, HOUR, chart_id="e", period="last 24 hours"))
    assert len(figure.findall(f".//{SVG}g[@class='bucket']")) == 24
    assert [s.text for s in figure.iterfind(".//div[@class='chart-y']/span")] == ["2", "1", "0"]
    latency = parse(latency_chart(buckets, HOUR, chart_id="l", period="last 24 hours"))
    assert latency.findall(f".//{SVG}path") == []
    assert latency.findtext(f".//{SVG}desc") == "No requests."


def test_text_put_in_a_chart_is_escaped() -> None:
    buckets = buckets_of_hours(counters({200: 1}))
    markup = requests_chart(buckets, HOUR, chart_id='x"><script>', period="<b>&</b>")
    assert "<b>" not in markup and "<script>" not in markup
    assert parse(markup).find(f".//{SVG}title") is not None


# -- latency ---------------------------------------------------------------------------------


def test_the_latency_chart_draws_p50_and_p99_with_a_gap_where_there_were_no_requests() -> None:
    slow = counters({200: 98}, latency_ms=4.0)
    for _ in range(2):
        slow.count(200, 400.0)
    buckets = buckets_of_hours(counters({200: 10}, latency_ms=2.0), None, slow)
    markup = latency_chart(buckets, HOUR, chart_id="lat", period="last 3 hours")
    assert_csp_safe(markup)
    figure = parse(markup)
    groups = figure.findall(f".//{SVG}g[@class='bucket']")
    assert [g.get("data-p50-ms") for g in groups] == [
        str(buckets[0].p50_ms),
        None,
        str(buckets[2].p50_ms),
    ]
    assert float(groups[2].get("data-p99-ms") or 0) == pytest.approx(400, rel=0.01)
    assert buckets[2].p99_ms == slow.summary()["p99_ms"]  # as the API says it
    paths = {p.get("class"): p.get("d") or "" for p in figure.iterfind(f".//{SVG}path")}
    assert set(paths) == {"line-p50", "line-p99"}
    # Two runs (bucket 0, bucket 2): two moves, none across the empty bucket.
    assert paths["line-p99"].count("M") == 2
    assert paths["line-p99"].startswith("M0 ") and f"M{2 * COLUMN} " in paths["line-p99"]
    top = nice_ceiling(max(b.p99_ms or 0 for b in buckets))
    assert [s.text for s in figure.iterfind(".//div[@class='chart-y']/span")] == [
        ms(top),
        ms(top / 2),
        "0",
    ]
    for path in figure.iterfind(f".//{SVG}path"):
        assert path.get("vector-effect") == "non-scaling-stroke"


# -- the sparkline ---------------------------------------------------------------------------


def test_a_sparkline_carries_its_totals_and_marks_the_hours_with_429s() -> None:
    buckets = buckets_of_hours(counters({200: 5}), counters({200: 5, 429: 3}), None)
    markup = sparkline(buckets, label="Requests per hour, last 24 hours")
    assert_csp_safe(markup)
    svg = parse(markup)
    assert svg.get("data-requests") == "13" and svg.get("data-rate-limited") == "3"
    assert svg.get("data-start") == iso(buckets[0].start)
    assert svg.get("viewBox") == f"0 0 {3 * COLUMN} 24"
    assert "13 requests" in (svg.findtext(f"{SVG}title") or "")
    assert len(svg.findall(f"{SVG}rect[@class='spark-429']")) == 1
    bars = [r for r in svg.findall(f"{SVG}rect") if r.get("class") is None]
    assert len(bars) == 2  # the empty hour has none
    assert float(bars[1].get("height") or 0) > float(bars[0].get("height") or 0)


# -- numbers for people ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "top"),
    [(0, 1), (1, 1), (1.5, 2), (3, 4), (7, 8), (9, 10), (43, 60), (100, 100), (101, 200)],
)
def test_the_axis_top_is_a_round_number_at_or_above_the_highest_value(
    value: float, top: float
) -> None:
    assert nice_ceiling(value) == top
    assert nice_ceiling(value, least=2) == max(top, 2)


def test_latencies_and_counts_read_well() -> None:
    assert [ms(None), ms(0.421), ms(3.14), ms(45.2), ms(1234), ms(25_000)] == [
        "—",
        "0.42 ms",
        "3.1 ms",
        "45 ms",
        "1.2 s",
        "25 s",
    ]
    assert [compact(950), compact(12_000), compact(1_500_000)] == ["950", "12k", "1.5M"]


# -- ranges, windows, the key page's section, the CSV ----------------------------------------


def test_each_range_reads_whole_buckets_ending_with_the_one_holding_now() -> None:
    expected = {("24h", "hour"): 24, ("7d", "day"): 7, ("7d", "hour"): 168, ("30d", "day"): 30}
    for (value, by), n in expected.items():
        choice, granularity = usage_choice(value, by)
        window = usage_window(choice, granularity, NOW)
        assert len(window.buckets) == n, (value, by)
        assert window.start <= NOW < window.end
        assert window.end - granularity.seconds <= NOW  # the last bucket holds now
    assert usage_choice(None, None) == (USAGE_RANGES[0], HOUR)
    assert usage_choice("7d", None) == (USAGE_RANGES[1], DAY)
    on_the_hour = usage_window(USAGE_RANGES[0], HOUR, HOUR.align(NOW))
    assert len(on_the_hour.buckets) == 24 and on_the_hour.end == HOUR.align(NOW) + 3600


@pytest.mark.parametrize(
    ("value", "by"), [("1y", None), ("24h", "day"), ("30d", "hour"), ("7d", "minute")]
)
def test_a_range_or_granularity_the_links_never_offer_is_refused(
    value: str, by: str | None
) -> None:
    with pytest.raises(ValidationError):
        usage_choice(value, by)


def report_of(
    rows: list[UsageRow], window_value: str = "24h", by: str | None = None
) -> UsageReport:
    choice, granularity = usage_choice(window_value, by)
    window = usage_window(choice, granularity, NOW)
    totals = UsageCounters()
    for row in rows:
        totals.merge(row.counters)
    return UsageReport(window, "org_x", None, totals, rows, None)


def test_a_keys_section_has_the_reports_totals_a_row_per_busy_bucket_and_links() -> None:
    choice, granularity = usage_choice("24h", None)
    window = usage_window(choice, granularity, NOW)
    first, last = window.buckets[0], window.buckets[-1]
    rows = [
        UsageRow(KEY, first, counters({200: 3, 429: 2}, latency_ms=8.0)),
        UsageRow(KEY, last, counters({200: 4, 503: 1}, latency_ms=12.0)),
    ]
    report = report_of(rows)
    usage = key_usage(KEY, choice, granularity, report)
    assert usage.buckets == 24 and usage.range == "24h" and usage.granularity == "hour"
    assert (usage.totals.requests, usage.totals.rate_limited) == (10, 2)
    assert usage.totals.server_errors == 1 and usage.totals.success == 7
    assert usage.totals.p99_ms == report.totals.summary()["p99_ms"]
    assert [(r.start, r.requests, r.rate_limited) for r in usage.rows] == [
        (iso(first), 5, 2),
        (iso(last), 5, 0),
    ]
    assert [(link.label, link.current) for link in usage.ranges] == [
        ("24 hours", True),
        ("7 days", False),
        ("30 days", False),
    ]
    assert usage.ranges[1].href == f"/dashboard/keys/{KEY}?range=7d#usage"
    assert usage.granularities == ()  # 24 hours come by hour only
    assert usage.csv_href == f"/dashboard/keys/{KEY}/usage.csv?range=24h&by=hour"
    groups = parse(usage.requests_chart).findall(f".//{SVG}g[@class='bucket']")
    assert len(groups) == 24
    assert sum(int(g.get("data-requests") or 0) for g in groups) == usage.totals.requests
    seven = key_usage(KEY, *usage_choice("7d", "hour"), report_of([], "7d", "hour"))
    assert [(link.label, link.current) for link in seven.granularities] == [
        ("by day", False),
        ("by hour", True),
    ]
    assert seven.granularities[0].href == f"/dashboard/keys/{KEY}?range=7d#usage"
    assert seven.granularities[1].href == f"/dashboard/keys/{KEY}?range=7d&by=hour#usage"


def test_the_keys_list_reads_each_keys_sparkline_from_one_set_of_rows() -> None:
    window = usage_window(USAGE_RANGES[0], HOUR, NOW)
    rows = [
        UsageRow(KEY, window.buckets[3], counters({200: 2})),
        UsageRow(KEY, window.buckets[20], counters({429: 4, 200: 1})),
        UsageRow(OTHER, window.buckets[23], counters({200: 7})),
        UsageRow(OTHER, window.start - 3600, counters({200: 99})),  # before the window
    ]
    sparks = key_sparks(rows, window)
    assert {k: (s.requests, s.rate_limited) for k, s in sparks.items()} == {
        KEY: (7, 4),
        OTHER: (7, 0),
    }
    assert parse(sparks[KEY].svg).get("data-requests") == "7"


def test_the_keys_list_sparklines_read_no_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparkline shows counts only: no percentile is computed (a thousand busy keys' sketches
    cost a second of CPU per keys list)."""
    window = usage_window(USAGE_RANGES[0], HOUR, NOW)
    rows = [
        UsageRow(KEY, start, counters({200: 3, 429: 1}, latency_ms=2.5 + i))
        for i, start in enumerate(window.buckets)
    ]

    def not_here(self: LatencySketch, q: float) -> float | None:
        raise AssertionError("a percentile computed for a sparkline")

    monkeypatch.setattr(LatencySketch, "quantile", not_here)
    sparks = key_sparks(rows, window)
    assert (sparks[KEY].requests, sparks[KEY].rate_limited) == (4 * 24, 24)
    bars = parse(sparks[KEY].svg).findall(f"{SVG}rect")
    assert len(bars) == 2 * 24  # a bar and a 429 mark per hour
    assert Bucket.counts_of(window.start, rows[0].counters) == Bucket(window.start, 4, 3, 1, 0, 1)


def test_the_csv_has_every_bucket_with_the_apis_field_names() -> None:
    choice, granularity = usage_choice("30d", None)
    window = usage_window(choice, granularity, NOW)
    cells = [UsageCounters() for _ in window.buckets]
    cells[-1] = counters({200: 3, 429: 1}, latency_ms=7.5)
    text = usage_csv(cells, window)
    lines = list(csv.DictReader(io.StringIO(text)))
    assert tuple(lines[0]) == CSV_COLUMNS
    assert CSV_COLUMNS[:3] == ("start", "requests", "success")
    assert len(lines) == 30
    assert lines[0]["start"] == iso(window.start) and lines[0]["requests"] == "0"
    assert lines[0]["p50_ms"] == ""
    summary = cells[-1].summary()
    assert lines[-1]["requests"] == "4" and lines[-1]["rate_limited"] == "1"
    assert math.isclose(float(lines[-1]["p99_ms"]), float(summary["p99_ms"] or 0))
    assert usage_csv(None, window).count("\r\n") == 31  # a key without usage: zeros
