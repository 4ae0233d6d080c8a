"""Usage on the dashboard, in Chromium over real HTTPS: the keys list's sparklines and a key's
charts show what the usage model counted from real requests.

A key makes real requests (some refused with 429 by a 5-per-minute limit); a history of request
events over the last 30 days is published beside them, as the API publishes its own; the
usage-ingest worker's loop catches up; then the pages are read in Chromium and their numbers
compared with what `services.usage` reports and with what was sent. Also: the pages fit a
390 px phone, break no rule of the Content-Security-Policy, and still show when the usage model
cannot answer (in-process, no browser).
"""

from __future__ import annotations

import calendar
import csv
import io
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import OperationalError
from playwright.async_api import Page

from adapters.request_events import RequestEvent, new_event_id
from dashboard.asgi import Dashboard, csrf_token_in
from dashboard.asgi import sign_in as sign_in_asgi
from dashboard.harness import MOBILE, Browsing, DashboardServer, poll, sign_in
from domain.actors import OPERATOR, UserActor
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Plan
from domain.user import Role
from projections.usage import Granularity, UsageCounters
from projections.usage_report import UsageReport, UsageWindow
from projections.usage_store import open_usage_store
from support.audit_events import publish
from workers.audit_ingest import AuditIngester, AuditIngestSettings

HOUR, DAY = Granularity.HOUR, Granularity.DAY
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


@dataclass
class Sent:
    """What was sent for one key: (occurred_at, status) of every request."""

    key_id: str
    requests: list[tuple[float, int]]

    def in_window(self, window: UsageWindow) -> Counter[str]:
        counts: Counter[str] = Counter()
        for at, status in self.requests:
            if window.start <= at < window.end:
                counts["requests"] += 1
                counts["rate_limited"] += status == 429
                counts["success"] += 200 <= status < 300
        return counts


# -- feeding the usage model -----------------------------------------------------------------


def history(
    org: Organization, key_id: str, *, hours: int, days: int, busy: bool, seed: int
) -> list[RequestEvent]:
    """Request events of one key before the current hour: every hour of the last `hours`,
    then a few a day for `days` more days; a busy key is refused with 429s now and then."""
    rng = random.Random(seed)
    now = time.time()
    this_hour = HOUR.align(now)
    events: list[RequestEvent] = []

    def event(at: float, status: int) -> RequestEvent:
        tail = rng.random() < 0.02
        latency = rng.uniform(15, 60) if tail else rng.lognormvariate(1.6, 0.4)
        return RequestEvent(
            id=new_event_id(),
            request_id=new_event_id(),
            key_id=key_id,
            key_hint="ak_live_…usag",
            org_id=format_org_id(org.id),
            env="live",
            method="GET",
            route="/v1/affiliates",
            path="/v1/affiliates",
            status=status,
            client_addr="203.0.113.7",
            user_agent="checkout/2.1",
            latency_ms=latency,
            occurred_at=at,
        )

    def status_in(hour_index: int) -> int:
        roll = rng.random()
        if busy and hour_index % 7 == 3 and roll < 0.3:
            return 429
        if roll < 0.04:
            return 404
        if roll < 0.05:
            return 500
        return 200

    for h in range(1, hours + 1):
        start = this_hour - h * 3600
        level = 30 + 25 * (1 if 8 <= (start // 3600) % 24 <= 18 else 0)
        for _ in range(rng.randint(level // 2, level) if busy else rng.randint(0, 6)):
            events.append(event(start + rng.uniform(0, 3599), status_in(h)))
    for d in range(1, days + 1):
        day_end = this_hour - hours * 3600 - (d - 1) * 86_400
        for _ in range(rng.randint(80, 260) if busy else rng.randint(0, 20)):
            events.append(event(day_end - rng.uniform(1, 86_399), status_in(d)))
    return events


async def catch_up_usage(server: DashboardServer, done: Any, timeout: float = 60) -> None:
    """Run the usage-ingest worker's loop until `done()` (the published events may still be
    on their way when it first catches up)."""
    assert server.settings.nats_url
    store = open_usage_store(server.settings)
    try:
        ingester = AuditIngester(
            store, server.settings.nats_url, AuditIngestSettings.from_env({}, label="usage")
        )

        async def caught_up() -> bool:
            await ingester.run_until_caught_up(timeout=30)
            return bool(done())

        assert await poll(caught_up, timeout=timeout, interval=0.5), "usage never caught up"
    finally:
        store.close()


# -- reading the pages -----------------------------------------------------------------------


def watch_csp(page: Page) -> list[str]:
    """Console messages about the Content-Security-Policy (Chromium logs each violation)."""
    seen: list[str] = []
    page.on(
        "console",
        lambda m: seen.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return seen


async def csp_violations(page: Page) -> list[str]:
    return list(await page.evaluate("window.__cspViolations || []"))


async def no_sideways_scroll(page: Page) -> int:
    return int(
        await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
    )


async def chart_buckets(page: Page, chart: str) -> list[dict[str, str]]:
    """The `data-` attributes of every bucket of a chart (`usage-requests`, `usage-latency`)."""
    return list(
        await page.eval_on_selector_all(
            f"#{chart} svg.chart-svg g.bucket",
            "gs => gs.map(g => Object.assign({}, g.dataset))",
        )
    )


async def totals_on(page: Page) -> dict[str, str]:
    return dict(
        await page.eval_on_selector_all(
            "#usage-totals [data-total]",
            "els => els.map(e => [e.dataset.total, e.dataset.value ?? e.textContent.trim()])",
        )
    )


def window_of(buckets: list[dict[str, str]], granularity: Granularity) -> UsageWindow:
    """The window a chart shows, read off its buckets."""
    first = calendar.timegm(time.strptime(buckets[0]["start"], "%Y-%m-%dT%H:%M:%SZ"))
    return UsageWindow(granularity, first, first + len(buckets) * granularity.seconds)


def report(
    server: DashboardServer, actor: UserActor, key_id: str, window: UsageWindow
) -> UsageReport:
    key = uuid.UUID(hex=key_id.removeprefix("key_"))
    return server.process.services.usage.report(
        actor, actor.org_id, window, key_id=key, limit=len(window.buckets)
    )


def as_number(text: str) -> int:
    return int(text.replace(",", ""))


def assert_page_matches(
    buckets: list[dict[str, str]], totals: dict[str, str], answer: UsageReport
) -> None:
    """The chart's buckets and the totals line say what the usage model reports."""
    rows = {row.start: row.counters for row in answer.rows}
    window = answer.window
    assert len(buckets) == len(window.buckets)
    for start, bucket in zip(window.buckets, buckets, strict=True):
        cell = rows.get(start, UsageCounters())
        shown = {k: int(bucket[k]) for k in ("requests", "success", "rateLimited")}
        assert shown == {
            "requests": cell.requests,
            "success": cell.success,
            "rateLimited": cell.rate_limited,
        }, bucket["start"]
        assert int(bucket["clientErrors"]) == cell.client_errors
        assert int(bucket["serverErrors"]) == cell.server_errors
    summary = answer.totals.summary()
    for name in ("requests", "success", "client_errors", "server_errors", "rate_limited"):
        assert as_number(totals[name]) == summary[name], name
    for name in ("p50_ms", "p99_ms"):
        assert float(totals[name]) == summary[name], name


# -- the test --------------------------------------------------------------------------------


async def test_the_usage_charts_show_what_the_usage_model_counted_from_real_requests(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    server = dashboard_server
    org = server.registry.set_rate_limit(server.org(Plan.AGENCY).id, 5, OPERATOR)
    admin = server.user(org, Role.ADMIN)
    actor = admin.acting(org.permissions)
    page = await browsing.page()
    await page.add_init_script(CSP_WATCH)
    console = watch_csp(page)
    await sign_in(page, admin.email)

    secrets = {}
    for name in ("Nightly export", "Checkout service"):
        await page.goto("/dashboard/keys")
        await page.fill("#create input[name=name]", name)
        await page.click("#create button[type=submit]")
        secrets[name] = (await page.text_content("#new-key") or "").strip()
        assert secrets[name].startswith("ak_live_")
    keys = {k.name: format_key_id(k.id) for k in server.registry.list_keys(org.id)}
    busy, quiet = keys["Checkout service"], keys["Nightly export"]

    # Real requests: the busy key goes past its 5 a minute; the quiet one makes two.
    sent = {busy: Sent(busy, []), quiet: Sent(quiet, [])}
    async with server.http() as http:
        for secret, key_id, n in (
            (secrets["Checkout service"], busy, 12),
            (secrets["Nightly export"], quiet, 2),
        ):
            for _ in range(n):
                at = time.time()
                answer = await http.get(
                    "/v1/affiliates", headers={"Authorization": f"Bearer {secret}"}
                )
                sent[key_id].requests.append((at, answer.status_code))
    statuses = Counter(status for _, status in sent[busy].requests)
    assert statuses[429] >= 2 and statuses[200] >= 5, statuses
    assert {status for _, status in sent[quiet].requests} == {200}

    # A history over the last 30 days, published as the API publishes request events.
    past = {
        busy: history(org, busy, hours=23, days=30, busy=True, seed=13),
        quiet: history(org, quiet, hours=23, days=30, busy=False, seed=14),
    }
    for key_id, events in past.items():
        sent[key_id].requests.extend((e.occurred_at, e.status) for e in events)
    batches = [e for events in past.values() for e in events]
    await publish(
        server.settings.nats_url or "", [batches[i : i + 500] for i in range(0, len(batches), 500)]
    )
    month = UsageWindow(DAY, DAY.align(time.time()) - 40 * 86_400, DAY.align(time.time()) + 86_400)
    everything = sum(len(s.requests) for s in sent.values())

    def all_counted() -> bool:
        totals = server.process.services.usage.report(actor, org.id, month).totals
        return totals.requests >= everything

    await catch_up_usage(server, all_counted)
    counted = server.process.services.usage.report(actor, org.id, month).totals
    assert counted.requests == everything  # each event once

    # Settings > API Keys: each key's last 24 hours, and a mark on the one refused with 429s.
    await page.goto("/dashboard/keys")
    for key_id in (busy, quiet):
        spark = page.locator(f"tr[data-key-id={key_id}] svg.spark")
        assert await spark.count() == 1, key_id
        first = await spark.get_attribute("data-start") or ""
        hours = window_of([{"start": first}] * 24, HOUR)  # the page's last 24 hours
        answer = report(server, actor, key_id, hours)
        expected = sent[key_id].in_window(hours)
        assert answer.totals.requests == expected["requests"] > 0
        assert answer.totals.rate_limited == expected["rate_limited"]
        assert int(await spark.get_attribute("data-requests") or -1) == expected["requests"]
        assert int(await spark.get_attribute("data-rate-limited") or -1) == expected["rate_limited"]
    badge = page.locator(f"tr[data-key-id={busy}] .badge-limited")
    assert await badge.count() == 1
    assert "429" in (await badge.text_content() or "")
    assert await page.locator(f"tr[data-key-id={quiet}] .badge-limited").count() == 0
    await browsing.shoot(page, "usage-keys")

    # The key's page, last 24 hours by hour: totals, chart and table say what was counted.
    await page.click(f"tr[data-key-id={busy}] a.key-name")
    await page.wait_for_selector("#usage-requests")
    buckets = await chart_buckets(page, "usage-requests")
    assert len(buckets) == 24
    window = window_of(buckets, HOUR)
    answer = report(server, actor, busy, window)
    assert_page_matches(buckets, await totals_on(page), answer)
    expected = sent[busy].in_window(window)
    assert answer.totals.requests == expected["requests"]
    assert answer.totals.rate_limited == expected["rate_limited"] >= statuses[429]
    latency = await chart_buckets(page, "usage-latency")
    rows = {row.start: row.counters.summary() for row in answer.rows}
    for start, bucket in zip(window.buckets, latency, strict=True):
        p99 = rows.get(start, {}).get("p99_ms")
        assert (float(bucket["p99Ms"]) if "p99Ms" in bucket else None) == p99
    marked = await page.locator("#usage-requests svg.chart-marks rect").count()
    assert marked == sum(1 for row in answer.rows if row.counters.rate_limited)
    await page.click("#usage-numbers summary")
    cells = await page.eval_on_selector_all(
        "#usage-numbers tbody tr",
        "trs => trs.map(tr => [tr.dataset.start, ...[...tr.cells].map(c => c.textContent.trim())])",
    )
    assert len(cells) == len(answer.rows)
    for row, cell in zip(answer.rows, cells, strict=True):
        assert as_number(cell[2]) == row.counters.requests
        assert as_number(cell[5]) == row.counters.rate_limited
    await page.click("#usage-numbers summary")
    await browsing.shoot(page, "usage-key-24h")

    # The CSV: every hour, the API's field names, the same numbers.
    csv_href = await page.get_attribute("#usage-csv", "href")
    assert csv_href
    download = await page.request.get(csv_href)
    assert download.status == 200 and download.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(await download.text())))
    assert len(lines) == 24
    assert sum(int(line["requests"]) for line in lines) == answer.totals.requests
    assert sum(int(line["rate_limited"]) for line in lines) == answer.totals.rate_limited

    # 7 days by day, then by hour; 30 days by day: links, no script.
    await page.click("#usage nav[aria-label='Usage range'] >> text=7 days")
    await page.wait_for_url("**range=7d**")
    assert len(await chart_buckets(page, "usage-requests")) == 7
    await page.click("#usage nav[aria-label='Bucket size'] >> text=by hour")
    await page.wait_for_url("**by=hour**")
    buckets = await chart_buckets(page, "usage-requests")
    assert len(buckets) == 168
    assert_page_matches(
        buckets, await totals_on(page), report(server, actor, busy, window_of(buckets, HOUR))
    )
    await page.click("#usage nav[aria-label='Usage range'] >> text=30 days")
    await page.wait_for_url("**range=30d**")
    buckets = await chart_buckets(page, "usage-requests")
    assert len(buckets) == 30
    window = window_of(buckets, DAY)
    answer = report(server, actor, busy, window)
    assert_page_matches(buckets, await totals_on(page), answer)
    assert answer.totals.requests == sent[busy].in_window(window)["requests"]
    await browsing.shoot(page, "usage-key-30d")

    assert await csp_violations(page) == [] and console == []

    # A phone: nothing scrolls sideways, the charts fit.
    phone = await browsing.page(MOBILE)
    await phone.add_init_script(CSP_WATCH)
    phone_console = watch_csp(phone)
    await sign_in(phone, admin.email)
    for path in (
        "/dashboard/keys",
        f"/dashboard/keys/{busy}",
        f"/dashboard/keys/{busy}?range=7d&by=hour",
        f"/dashboard/keys/{busy}?range=30d",
    ):
        await phone.goto(path)
        overflow = await no_sideways_scroll(phone)
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 390 px wide"
        assert await csp_violations(phone) == [], path
    await phone.goto(f"/dashboard/keys/{busy}")
    await phone.click("#usage-numbers summary")
    assert await no_sideways_scroll(phone) <= 0, "the table of numbers widens the page"
    width = await phone.eval_on_selector(
        "#usage-requests svg.chart-svg", "e => e.getBoundingClientRect().width"
    )
    assert 250 <= width <= 390
    assert phone_console == []


# -- when the usage model cannot answer ------------------------------------------------------


async def test_the_key_pages_show_without_usage_while_the_usage_model_cannot_answer(
    dashboard: Dashboard, monkeypatch: Any
) -> None:
    user = dashboard.user()
    key = dashboard.registry.create_key(
        user.org_id, name="Steady", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    key_id = format_key_id(key.key.id)
    store = dashboard.process.services.usage.usage

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        # What the SQLite store raises for "database is locked" (eventsourcing wraps sqlite3's).
        raise OperationalError("database is locked")

    for name in ("Second", "Third"):
        dashboard.registry.create_key(
            user.org_id, name=name, env=Environment.TEST, key_type=KeyType.SECRET, actor=OPERATOR
        )
    reads: list[Any] = []
    query = store.query

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return query(*args, **kwargs)

    async with dashboard.client() as client:
        await sign_in_asgi(client, user.email)
        monkeypatch.setattr(store, "query", counted)
        keys = await client.get("/dashboard/keys")
        assert keys.status_code == 200 and 'class="spark"' not in keys.text  # no requests yet
        assert keys.text.count("no requests") == 3
        assert len(reads) == 1, "the keys list reads every key's usage at once"
        monkeypatch.undo()
        monkeypatch.setattr(store, "query", unavailable)
        monkeypatch.setattr(store, "totals", unavailable)
        keys = await client.get("/dashboard/keys")
        assert keys.status_code == 200, keys.text
        assert "Steady" in keys.text and 'id="usage-unavailable"' in keys.text
        assert keys.text.count(">unavailable</span></td>") == 3  # the column stays, unread
        assert cells_per_row(keys.text) == [len(header_cells(keys.text))] * 3
        detail = await client.get(f"/dashboard/keys/{key_id}")
        assert detail.status_code == 200, detail.text
        assert 'id="usage-unavailable"' in detail.text and "History" in detail.text
        assert 'id="usage-requests"' not in detail.text
        monkeypatch.undo()
        detail = await client.get(f"/dashboard/keys/{key_id}?range=30d")
        assert detail.status_code == 200 and 'id="usage-requests"' in detail.text
        assert detail.text.count('class="bucket"') == 2 * 30  # requests and latency charts
        refused = await client.get(f"/dashboard/keys/{key_id}?range=1y")
        assert refused.status_code == 422 and "usage range" in refused.text
        refused = await client.get(f"/dashboard/keys/{key_id}/usage.csv?range=24h&by=day")
        assert refused.status_code == 422
        download = await client.get(f"/dashboard/keys/{key_id}/usage.csv?range=7d")
        assert download.status_code == 200 and download.text.count("\r\n") == 1 + 7


def header_cells(page: str) -> list[str]:
    """The keys table's column headings."""
    head = re.search(r"<thead>(.*?)</thead>", page, re.S)
    assert head, "no table head"
    return re.findall(r"<th[ >](.*?)</th>", head.group(1))


def cells_per_row(fragment: str) -> list[int]:
    """How many cells each row of the keys table's body has (the page's or an htmx swap's)."""
    body = re.search(r'<tbody id="keys-body".*?>(.*?)</tbody>', fragment, re.S)
    assert body, "no keys table body"
    return [row.count("<td ") for row in body.group(1).split("<tr ")[1:]]


async def test_the_keys_table_keeps_its_columns_when_usage_comes_and_goes(
    dashboard: Dashboard, monkeypatch: Any
) -> None:
    """The keys list read while the usage model could not answer, then a key created with htmx
    once it answers again (the table's body is swapped in, its head is not), and back."""
    user = dashboard.user()
    store = dashboard.process.services.usage.usage

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("database is locked")

    async with dashboard.client() as client:
        await sign_in_asgi(client, user.email)
        for first_down in (True, False):
            if first_down:
                monkeypatch.setattr(store, "query", unavailable)
            keys = await client.get("/dashboard/keys")
            assert keys.status_code == 200, keys.text
            assert ('id="usage-unavailable"' in keys.text) is first_down
            columns = header_cells(keys.text)
            monkeypatch.undo()
            if not first_down:
                monkeypatch.setattr(store, "query", unavailable)
            created = await client.post(
                "/dashboard/keys",
                data={"name": f"Swapped {first_down}", "env": "live"},
                headers={"HX-Request": "true", "X-CSRFToken": csrf_token_in(keys)},
            )
            monkeypatch.undo()
            assert created.status_code == 200, created.text
            assert 'hx-swap-oob="true"' in created.text
            rows = cells_per_row(created.text)
            assert rows and rows == [len(columns)] * len(rows), (first_down, rows, columns)
            assert "Last 24 h" in columns  # whether or not usage could be read


async def test_a_failure_of_ours_in_the_usage_model_is_not_taken_for_an_outage(
    dashboard: Dashboard, monkeypatch: Any
) -> None:
    """Only the store's errors show as "usage unavailable": a bug is a bug (500, logged)."""
    user = dashboard.user()
    key = dashboard.registry.create_key(
        user.org_id, name="Bugged", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )

    def bug(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug of ours")

    async with dashboard.client() as client:
        await sign_in_asgi(client, user.email)
        monkeypatch.setattr(dashboard.process.services.usage.usage, "query", bug)
        keys = await client.get("/dashboard/keys")
        assert keys.status_code == 500 and 'id="usage-unavailable"' not in keys.text
        detail = await client.get(f"/dashboard/keys/{format_key_id(key.key.id)}")
        assert detail.status_code == 500 and 'id="usage-unavailable"' not in detail.text
