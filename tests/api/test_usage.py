"""`GET /v1/usage`: exact counts of real requests, roll-ups that add up, pages, the CSV export,
the organization's and the environment's walls, and clear refusals of bad input."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

import api.routes.usage as usage_routes
import projections.usage_report as usage_report
from adapters.request_events import new_event_id
from adapters.settings import Settings
from application.registry import IssuedKey
from bootstrap.workers import run_usage
from domain.actors import OPERATOR
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment
from domain.organization import Organization
from domain.plans import Permission, Plan
from projections.request_audit import AuditEntry
from projections.usage import COUNTER_FIELDS, Granularity, iso
from projections.usage_query import UsageStore
from projections.usage_store import open_usage_store
from support.api import Api, assert_error, bearer
from support.windows import early_in_a_window

MINUTE, HOUR, DAY = Granularity.MINUTE, Granularity.HOUR, Granularity.DAY
#: Yesterday 00:00 UTC: the synthetic usage sits around it, well within every retention.
D1 = DAY.align(time.time()) - 86_400


@pytest.fixture
def store(api_settings: Settings) -> Iterator[UsageStore]:
    """The usage model as the usage worker writes it (the API reads it through its own)."""
    opened = open_usage_store(api_settings)
    yield opened
    opened.close()


class Requests:
    """Writes synthetic request events straight into the usage store, as the worker would."""

    def __init__(self, store: UsageStore) -> None:
        self.store = store
        self.seq = 0

    def add(
        self,
        org: Organization,
        key: IssuedKey,
        at: float,
        *,
        status: int = 200,
        latency_ms: float = 2.0,
        count: int = 1,
    ) -> None:
        entries = [
            AuditEntry(
                org_id=format_org_id(org.id),
                seq=0,
                event_id=new_event_id(),
                request_id=new_event_id(),
                key_id=format_key_id(key.key.id),
                key_hint=None,
                env=key.key.env.value,
                method="GET",
                route="/v1/affiliates",
                path="/v1/affiliates",
                status=status,
                client_addr=None,
                user_agent=None,
                latency_ms=latency_ms * (1 + i / 10),
                occurred_at=at,
            )
            for i in range(count)
        ]
        self.seq += 1
        self.store.write([(self.seq, entries)], self.seq)


@pytest.fixture
def requests(store: UsageStore) -> Requests:
    return Requests(store)


@pytest.fixture
async def usage_worker(
    api_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    """The usage-ingest worker, in-process, on a durable consumer of its own."""
    monkeypatch.setenv("ICODRIP_USAGE_DURABLE", f"usage-test-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("ICODRIP_USAGE_LINGER_MS", "10")
    stopping = asyncio.Event()
    task = asyncio.create_task(run_usage(api_settings, stopping))
    yield
    stopping.set()
    await asyncio.wait_for(task, 30)


async def reader(api: Api, org: Organization, env: Environment = Environment.LIVE) -> dict:
    return bearer(await api.key(org, env, permissions={Permission.USAGE_READ}))


async def usage(api: Api, headers: dict, **params: object) -> dict[str, Any]:
    response = await api.client.get("/v1/usage", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()  # type: ignore[no-any-return]


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.25)


def counts(row: dict[str, Any]) -> dict[str, int]:
    return {name: row[name] for name in COUNTER_FIELDS}


# -- real requests, counted exactly ---------------------------------------------------------


async def test_real_requests_are_counted_exactly_within_seconds(
    api: Api, usage_worker: None
) -> None:
    org = api.org(Plan.AGENCY)
    api.registry.set_rate_limit(org.id, 5, OPERATOR)
    worker = await api.key(org)
    limited = await api.key(org, permissions={Permission.AFFILIATES_READ})
    await early_in_a_window(20)
    statuses = []
    for _ in range(2):
        missing = f"/v1/affiliates/aff_{uuid.uuid4().hex}"
        statuses.append((await api.client.get(missing, headers=bearer(worker))).status_code)
    created = await api.client.post("/v1/affiliates", json={"name": "A"}, headers=bearer(worker))
    statuses.append(created.status_code)
    for _ in range(5):
        statuses.append(
            (await api.client.get("/v1/affiliates", headers=bearer(worker))).status_code
        )
    denied = await api.client.post("/v1/affiliates", json={"name": "B"}, headers=bearer(limited))
    assert statuses == [404, 404, 201, 200, 200, 429, 429, 429]
    assert denied.status_code == 403
    api.registry.clear_rate_limit(org.id, OPERATOR)  # the reader below polls freely
    headers = await reader(api, org)

    expected = {
        "requests": 8,
        "success": 3,
        "client_errors": 5,
        "server_errors": 0,
        "rate_limited": 3,
        "refused": 0,
    }
    worker_id = format_key_id(worker.key.id)

    async def counted() -> bool:
        page = await usage(api, headers, key_id=worker_id, granularity="minute")
        return bool(page["totals"]["requests"] >= 8)

    await eventually(counted)
    for granularity in ("minute", "hour", "day"):
        page = await usage(api, headers, key_id=worker_id, granularity=granularity)
        assert page["object"] == "usage" and page["granularity"] == granularity
        assert counts(page["totals"]) == expected, granularity
        (row,) = page["data"]  # one minute: `early_in_a_window` kept the requests in one
        assert row["key_id"] == worker_id and counts(row) == expected
        assert row["start"].endswith("Z") and page["from"] <= row["start"] < page["to"]
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert page["next_cursor"] is None

    limited_id = format_key_id(limited.key.id)
    page = await usage(api, headers, key_id=limited_id)
    refused_once = {**dict.fromkeys(expected, 0), "requests": 1, "client_errors": 1, "refused": 1}
    assert counts(page["totals"]) == refused_once
    # Without key_id: one series per key of the organization, the same rows.
    everyone = await usage(api, headers, granularity="minute")
    by_key = {row["key_id"]: counts(row) for row in everyone["data"]}
    assert by_key[worker_id] == expected and by_key[limited_id] == refused_once
    assert everyone["totals"]["requests"] >= 9  # and the reader's own requests, once counted


# -- roll-ups ---------------------------------------------------------------------------------


async def test_the_minutes_add_up_to_the_hours_and_the_days(api: Api, requests: Requests) -> None:
    org = api.org()
    keys = [await api.key(org), await api.key(org)]
    # Across two days and three hours: 23:58 the day before yesterday to 01:02 yesterday.
    moments = [D1 - 120, D1 - 61, D1 - 1, D1, D1 + 59, D1 + 3_599, D1 + 3_600, D1 + 3_725]
    for i, moment in enumerate(moments):
        for key in keys:
            requests.add(org, key, moment, status=(200, 404, 429, 500, 403)[i % 5], count=i + 1)
    headers = await reader(api, org)
    window = {"from": iso(D1 - 3_600), "to": iso(D1 + 7_200)}
    pages = {
        g.label: await usage(api, headers, granularity=g.label, **window)
        for g in (MINUTE, HOUR, DAY)
    }
    assert pages["day"]["from"] == iso(D1 - 86_400) and pages["day"]["to"] == iso(D1 + 86_400)

    def rolled_up(rows: list[dict[str, Any]], size: int) -> dict[tuple[str, int], Counter]:
        sums: dict[tuple[str, int], Counter] = {}
        for row in rows:
            start = int(datetime.fromisoformat(row["start"]).timestamp())
            sums.setdefault((row["key_id"], start - start % size), Counter()).update(counts(row))
        return sums

    minutes, hours, days = (pages[g]["data"] for g in ("minute", "hour", "day"))
    assert len(minutes) == 2 * len({MINUTE.align(m) for m in moments})  # 6 minutes
    assert rolled_up(minutes, 3_600) == rolled_up(hours, 3_600)
    assert rolled_up(minutes, 86_400) == rolled_up(days, 86_400) == rolled_up(hours, 86_400)
    assert len(hours) == 2 * 3 and len(days) == 2 * 2
    # The totals are one multiset of requests whatever the granularity (percentiles too).
    assert pages["minute"]["totals"] == pages["hour"]["totals"] == pages["day"]["totals"]
    assert pages["minute"]["totals"]["requests"] == 2 * sum(range(1, len(moments) + 1))


# -- walls ------------------------------------------------------------------------------------


async def test_another_organizations_usage_does_not_exist(api: Api, requests: Requests) -> None:
    ours, theirs = api.org(), api.org()
    our_key = await api.key(ours)
    requests.add(ours, our_key, D1 + 30, count=4)
    their_headers = await reader(api, theirs)
    window = {"from": iso(D1), "to": iso(D1 + 3_600), "granularity": "minute"}

    refused = await api.client.get(
        "/v1/usage",
        params={**window, "key_id": format_key_id(our_key.key.id)},
        headers=their_headers,
    )
    assert_error(refused, 404, "not_found")
    unknown = await api.client.get(
        "/v1/usage", params={"key_id": f"key_{uuid.uuid4().hex}"}, headers=their_headers
    )
    assert_error(unknown, 404, "not_found")
    page = await usage(api, their_headers, **window)
    assert page["data"] == [] and page["totals"]["requests"] == 0
    export = await api.client.get(
        "/v1/usage", params=window, headers={**their_headers, "Accept": "text/csv"}
    )
    assert export.status_code == 200 and export.text.splitlines() == [
        ",".join(usage_routes.CSV_COLUMNS)
    ]
    refused_export = await api.client.get(
        "/v1/usage",
        params={**window, "key_id": format_key_id(our_key.key.id)},
        headers={**their_headers, "Accept": "text/csv"},
    )
    assert_error(refused_export, 404, "not_found")
    ours_page = await usage(api, await reader(api, ours), **window)
    assert [(r["key_id"], r["requests"]) for r in ours_page["data"]] == [
        (format_key_id(our_key.key.id), 4)
    ]


async def test_a_test_key_sees_test_mode_usage_only(api: Api, requests: Requests) -> None:
    org = api.org()
    live, test = await api.key(org), await api.key(org, Environment.TEST)
    requests.add(org, live, D1 + 10, count=3)
    requests.add(org, test, D1 + 10, count=2)
    window = {"from": iso(D1), "to": iso(D1 + 60), "granularity": "minute"}
    live_id, test_id = format_key_id(live.key.id), format_key_id(test.key.id)

    test_headers = await reader(api, org, Environment.TEST)
    page = await usage(api, test_headers, **window)
    assert page["env"] == "test"
    assert [(r["key_id"], r["requests"]) for r in page["data"]] == [(test_id, 2)]
    assert page["totals"]["requests"] == 2
    assert (await usage(api, test_headers, key_id=test_id, **window))["totals"]["requests"] == 2
    refused = await api.client.get(
        "/v1/usage", params={**window, "key_id": live_id}, headers=test_headers
    )
    assert_error(refused, 404, "not_found")
    asked_live = await api.client.get(
        "/v1/usage", params={**window, "env": "live"}, headers=test_headers
    )
    assert_error(asked_live, 403, "insufficient_permissions")
    export = await api.client.get(
        "/v1/usage", params=window, headers={**test_headers, "Accept": "text/csv"}
    )
    assert {row["key_id"] for row in csv.DictReader(io.StringIO(export.text))} == {test_id}

    live_headers = await reader(api, org)
    both = await usage(api, live_headers, **window)
    assert both["env"] is None and both["totals"]["requests"] == 5
    assert {r["key_id"] for r in both["data"]} == {live_id, test_id}
    only_test = await usage(api, live_headers, env="test", **window)
    assert [r["key_id"] for r in only_test["data"]] == [test_id]
    assert (await usage(api, live_headers, key_id=test_id, **window))["totals"]["requests"] == 2


# -- pages and exports ------------------------------------------------------------------------


async def some_usage(api: Api, requests: Requests) -> tuple[dict, dict[str, object]]:
    """Three keys, seven minutes each (21 rows); a reader's headers and the window."""
    org = api.org()
    for key in [await api.key(org) for _ in range(3)]:
        for minute in range(7):
            requests.add(org, key, D1 + 60 * minute + 5, status=200 + 100 * (minute % 4))
    window = {"from": iso(D1), "to": iso(D1 + 3_600), "granularity": "minute"}
    return await reader(api, org), window


async def test_pages_follow_the_cursor_through_every_row_once(api: Api, requests: Requests) -> None:
    headers, window = await some_usage(api, requests)
    everything = await usage(api, headers, **window)
    assert len(everything["data"]) == 21 and everything["next_cursor"] is None
    seen: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        params = {**window, "limit": 4, **({"cursor": cursor} if cursor else {})}
        page = await usage(api, headers, **params)
        assert page["totals"] == everything["totals"]  # the window's, on every page
        seen += page["data"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None or pages > 10:
            break
    assert pages == 6
    assert seen == everything["data"]
    assert len({(r["key_id"], r["start"]) for r in seen}) == 21
    assert seen == sorted(seen, key=lambda r: (r["key_id"], r["start"]))


async def test_the_csv_export_streams_the_same_rows(
    api: Api, requests: Requests, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers, window = await some_usage(api, requests)
    page = await usage(api, headers, **window)
    monkeypatch.setattr(usage_routes, "EXPORT_PAGE", 4)  # several steps of the export
    monkeypatch.setattr(usage_report, "MAX_PAGE", 5)  # several pages of the store
    response = await api.client.get(
        "/v1/usage", params={**window, "limit": 1}, headers={**headers, "Accept": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="usage.csv"'
    assert response.headers["cache-control"] == "no-store"
    assert response.text.splitlines()[0] == ",".join(usage_routes.CSV_COLUMNS)
    table = list(csv.DictReader(io.StringIO(response.text)))
    as_text = [{k: "" if v is None else str(v) for k, v in row.items()} for row in page["data"]]
    assert len(table) == 21  # every row, whatever `limit` says
    assert table == as_text


# -- refusals ---------------------------------------------------------------------------------


def crafted_cursor(key_id: str, start: int) -> str:
    """A token shaped as the API's cursors are (base64url of `[key_id, start]`)."""
    raw = json.dumps([key_id, start]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_the_longest_window_asked_is_answered(api: Api) -> None:
    """7 days of minutes (90 of hours) from and to any second: answered, one bucket wider."""
    headers = await reader(api, api.org())
    for granularity, days, end in (
        ("minute", 7, "2026-03-01T10:20:30Z"),
        ("hour", 90, "2026-03-01T10:20:30Z"),
    ):
        start = datetime.fromisoformat(end) - timedelta(days=days)
        window = {"from": start.isoformat(), "to": end}
        page = await usage(api, headers, granularity=granularity, **window)
        widened = datetime.fromisoformat(page["to"]) - datetime.fromisoformat(page["from"])
        size = timedelta(minutes=1) if granularity == "minute" else timedelta(hours=1)
        assert widened == timedelta(days=days) + size, granularity
    # Without `to`: up to our now (`from` = the caller's now - 7 days), within one minute.
    await early_in_a_window(5)
    since = await usage(
        api, headers, granularity="minute", **{"from": iso(int(time.time()) - 7 * 86_400)}
    )
    widened = datetime.fromisoformat(since["to"]) - datetime.fromisoformat(since["from"])
    assert widened == timedelta(days=7, minutes=1)


async def test_bad_input_is_a_clear_validation_error(api: Api) -> None:
    headers = await reader(api, api.org())
    for params, says in [
        ({"granularity": "week"}, "granularity"),
        ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "before"),
        ({"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "before"),
        (
            {"granularity": "minute", "from": "2026-03-01T00:00:00Z", "to": "2026-03-09T00:00Z"},
            "7 days",
        ),
        ({"granularity": "hour", "from": "2025-01-01T00:00:00Z"}, "90 days"),
        ({"key_id": "key_nothex"}, "key_id"),
        ({"key_id": "org_" + uuid.uuid4().hex}, "key_id"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WzEsMl0"}, "cursor"),  # JSON, but not a usage cursor
        # A usage cursor's shape, but not one the API made: a time past what SQLite's integers
        # hold (was a 500 there), before 1970 or after 2999; not a key id.
        ({"cursor": crafted_cursor(f"key_{uuid.uuid4().hex}", 2**63)}, "cursor"),
        ({"cursor": crafted_cursor(f"key_{uuid.uuid4().hex}", -1)}, "cursor"),
        ({"cursor": crafted_cursor(f"key_{uuid.uuid4().hex}", usage_report.LATEST + 1)}, "cursor"),
        ({"cursor": crafted_cursor("k", 0)}, "cursor"),
        ({"cursor": crafted_cursor(f"org_{uuid.uuid4().hex}", 0)}, "cursor"),
        ({"from": "2026-03-01T12:00:00"}, "from"),  # no offset
        ({"to": "yesterday"}, "to"),
        ({"from": "0001-01-01T00:00:00+01:00"}, "from"),
        ({"to": "9999-12-31T23:59:59Z"}, "to"),
        ({"env": "prod"}, "env"),
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"limit": "many"}, "limit"),
    ]:
        response = await api.client.get("/v1/usage", params=params, headers=headers)
        body = assert_error(response, 422, "validation_error")
        assert says in body["error"]["message"], (params, body)


async def test_an_unreachable_usage_store_is_503(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    headers = await reader(api, api.org())
    asked: list[object] = []

    def down(*args: object, **__: object) -> None:
        asked.append(args)
        raise OperationalError("connection refused (simulated)")

    monkeypatch.setattr(api.process.services.usage.usage, "query", down)
    response = await api.client.get("/v1/usage", headers=headers)
    body = assert_error(response, 503, "store_unavailable")
    assert response.headers["retry-after"] == "5" and "simulated" not in body["error"]["message"]

    # The CSV export reads its first page before its response begins: a 503, not a broken 200.
    health = api.process.litestar.state.store_health

    async def up_again() -> bool:  # the main store is up: its probe clears the gate at once
        return not health.down

    await eventually(up_again)
    asked.clear()
    export = await api.client.get("/v1/usage", headers={**headers, "Accept": "text/csv"})
    body = assert_error(export, 503, "store_unavailable")
    assert export.headers["retry-after"] == "5" and "simulated" not in body["error"]["message"]
    assert asked, "answered by the handler, not by the store-down gate"
