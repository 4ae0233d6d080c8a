"""`GET /v1/audit/requests`: filters, pages, exports, and never another organization's rows."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import msgspec
import pytest

import api.routes.audit_requests as audit_routes
from adapters.request_events import RequestEvent, RequestEventBatch, new_event_id
from adapters.settings import Settings
from bootstrap.api import api_process
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment
from domain.organization import Organization
from domain.plans import Permission, Plan
from projections.request_audit import Message
from projections.request_audit_live import open_live_audit_store
from projections.request_audit_query import RequestAuditStore
from support.api import Api, assert_error, bearer, serving
from support.servers import NatsServer
from workers.audit_ingest import AuditIngester, AuditIngestSettings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[Api]:
    process = api_process(api_settings, trusted_proxies=["10.0.0.0/8"])
    async with serving(process) as api:
        yield api


@pytest.fixture
def store(api_settings: Settings) -> Iterator[RequestAuditStore]:
    """The audit model as the ingest worker writes it (the API reads it through its own)."""
    opened = open_live_audit_store(api_settings)
    yield opened
    opened.close()


class Rows:
    """Writes synthetic request events straight into the audit store, as the worker would."""

    def __init__(self, store: RequestAuditStore) -> None:
        self.store = store
        self.seq = 0

    def add(self, org: Organization | None, **fields: object) -> RequestEvent:
        values: dict[str, object] = {
            "id": new_event_id(),
            "request_id": new_event_id(),
            "key_id": None,
            "key_hint": "ak_live_…abcd",
            "org_id": None if org is None else format_org_id(org.id),
            "env": "live",
            "method": "GET",
            "route": "/v1/affiliates",
            "path": "/v1/affiliates",
            "status": 200,
            "client_addr": "203.0.113.7",
            "user_agent": "svc/1.0",
            "latency_ms": 1.5,
            "occurred_at": T0,
        }
        values.update(fields)
        event = RequestEvent(**values)  # type: ignore[arg-type]
        self.seq += 1
        self.store.ingest(
            [Message(self.seq, msgspec.json.encode(RequestEventBatch(events=[event])))]
        )
        return event


@pytest.fixture
def rows(store: RequestAuditStore) -> Rows:
    return Rows(store)


async def auditor(api: Api, org: Organization, env: Environment = Environment.LIVE) -> dict:
    return bearer(await api.key(org, env, permissions={Permission.AUDIT_READ}))


async def listing(api: Api, headers: dict, **params: object) -> dict:
    response = await api.client.get("/v1/audit/requests", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_the_auditor_sees_which_key_made_each_request(
    api: Api, api_settings: Settings, nats_server: NatsServer, store: RequestAuditStore
) -> None:
    org = api.org(Plan.PRO)
    worker = await api.key(org)
    reader = await api.key(org, permissions={Permission.AFFILIATES_READ})
    ok = await api.client.get(
        "/v1/affiliates", headers={**bearer(worker), "User-Agent": "billing/2.1"}
    )
    denied = await api.client.post("/v1/affiliates", json={"name": "x"}, headers=bearer(reader))
    assert (ok.status_code, denied.status_code) == (200, 403)
    await api.process.services.publisher.flush()  # type: ignore[union-attr]
    await AuditIngester(
        store, nats_server.url, AuditIngestSettings(durable=f"t-{uuid.uuid4().hex[:8]}")
    ).run_until_caught_up()

    page = await listing(api, await auditor(api, org))
    by_request = {row["request_id"]: row for row in page["data"]}
    seen_ok = by_request[ok.headers["x-request-id"]]
    seen_denied = by_request[denied.headers["x-request-id"]]
    assert seen_ok["key_id"] == format_key_id(worker.key.id)
    assert seen_ok["organization"] == format_org_id(org.id)
    assert (seen_ok["method"], seen_ok["route"], seen_ok["status"]) == (
        "GET",
        "/v1/affiliates",
        200,
    )
    assert seen_ok["user_agent"] == "billing/2.1" and seen_ok["object"] == "audit_request"
    assert (seen_denied["key_id"], seen_denied["status"]) == (format_key_id(reader.key.id), 403)
    assert len(seen_ok["row_hash"]) == 64 and seen_ok["sequence"] >= 1
    assert worker.secret not in json.dumps(page)

    used = store.last_used([worker.key.id, reader.key.id])
    assert abs(used[worker.key.id].at - time.time()) < 60
    assert used[worker.key.id].addr == seen_ok["client_addr"]
    assert reader.key.id in used  # a 403 is still a use of an authenticated key


async def test_filters_narrow_the_rows(api: Api, rows: Rows) -> None:
    org = api.org()
    k1, k2 = f"key_{uuid.uuid4().hex}", f"key_{uuid.uuid4().hex}"
    rows.add(org, key_id=k1, status=200, occurred_at=T0)
    rows.add(org, key_id=k1, status=403, method="POST", occurred_at=T0 + 60)
    rows.add(org, key_id=k2, status=429, occurred_at=T0 + 120)
    rows.add(org, key_id=k2, status=201, method="POST", route="/v1/api-keys", occurred_at=T0 + 180)
    headers = await auditor(api, org)

    async def statuses(**params: object) -> list[int]:
        return [r["status"] for r in (await listing(api, headers, **params))["data"]]

    assert await statuses(route="/v1/affiliates") == [429, 403, 200]  # newest first
    assert await statuses(key_id=k1) == [403, 200]
    assert await statuses(status="4xx") == [429, 403]
    assert await statuses(status=201) == [201]
    assert await statuses(method="post") == [201, 403]
    assert await statuses(since="2026-03-01T12:01:00Z", route="/v1/affiliates") == [429, 403]
    assert await statuses(until="2026-03-01T12:02:00Z") == [403, 200]
    assert await statuses(since="2026-03-01T13:01:30+01:00", until="2026-03-01T12:02:01Z") == [429]
    assert await statuses(key_id=k2, status="2xx") == [201]


async def test_bad_filters_are_clear_validation_errors(api: Api) -> None:
    headers = await auditor(api, api.org())
    for params in (
        {"since": "2026-03-01T12:00:00"},  # no offset
        {"until": "yesterday"},
        {"status": "abc"},
        {"status": "\u00b2\u00b2\u00b2"},  # digits to str.isdigit, not to int(): was a 500
        {"key_id": "key_nothex"},
        {"method": "GET / HTTP"},
        {"cursor": "not-a-cursor"},
        {"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
        {"limit": 0},
    ):
        response = await api.client.get("/v1/audit/requests", params=params, headers=headers)
        assert_error(response, 422, "validation_error")


async def test_pages_follow_the_cursor_without_overlap(api: Api, rows: Rows) -> None:
    org = api.org()
    ids = [rows.add(org, occurred_at=T0 + i).id for i in range(23)]
    headers = await auditor(api, org)
    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, object] = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = await listing(api, headers, **params)
        assert page["object"] == "list"
        seen += [r["id"] for r in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == ids[::-1]


async def test_csv_export_streams_the_whole_filtered_set(
    api: Api, rows: Rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_routes, "EXPORT_PAGE", 7)  # several pages of the store
    org = api.org()
    key = f"key_{uuid.uuid4().hex}"
    for i in range(20):
        rows.add(org, key_id=key, occurred_at=T0 + i, status=200 if i % 2 else 500)
    rows.add(org, key_id=key, user_agent='=HYPERLINK("http://evil")', path="/v1/a\tb\nc")
    rows.add(org, key_id=f"key_{uuid.uuid4().hex}")  # another key: filtered out
    headers = {**(await auditor(api, org)), "Accept": "text/csv"}
    response = await api.client.get(
        "/v1/audit/requests", params={"key_id": key, "limit": 1}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert len(table) == 21  # every row, whatever `limit` says
    assert {r["key_id"] for r in table} == {key}
    assert [r["status"] for r in table].count("500") == 10
    odd = table[0]
    assert odd["user_agent"].startswith("'=")  # a formula is neutralized
    assert odd["path"] == "/v1/a\tb\nc"
    assert list(table[0]) == list(audit_routes.CSV_COLUMNS)


async def test_ndjson_export_is_one_object_per_line(
    api: Api, rows: Rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_routes, "EXPORT_PAGE", 4)
    org = api.org()
    for i in range(9):
        rows.add(org, status=404 if i < 5 else 200, occurred_at=T0 + i)
    headers = {**(await auditor(api, org)), "Accept": "application/x-ndjson"}
    response = await api.client.get("/v1/audit/requests", params={"status": 404}, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.text.splitlines()
    objects = [json.loads(line) for line in lines]
    assert len(objects) == 5 and {o["status"] for o in objects} == {404}
    assert [o["sequence"] for o in objects] == sorted(
        (o["sequence"] for o in objects), reverse=True
    )


async def test_an_auditor_never_sees_another_organization(api: Api, rows: Rows) -> None:
    a, b = api.org(), api.org()
    b_key = f"key_{uuid.uuid4().hex}"
    for _ in range(3):
        rows.add(a)
        rows.add(b, key_id=b_key, path="/v1/affiliates?secret-of-b")
    rows.add(None, status=401)  # unknown keys: no organization's rows
    headers = await auditor(api, a)
    page = await listing(api, headers, limit=100)
    assert len(page["data"]) == 3
    assert {r["organization"] for r in page["data"]} == {format_org_id(a.id)}
    assert (await listing(api, headers, key_id=b_key))["data"] == []
    for accept in ("text/csv", "application/x-ndjson"):
        export = await api.client.get("/v1/audit/requests", headers={**headers, "Accept": accept})
        assert "secret-of-b" not in export.text and format_org_id(b.id) not in export.text


async def test_audit_read_is_required(api: Api) -> None:
    free_org = api.org(Plan.FREE)
    response = await api.client.get("/v1/audit/requests", headers=bearer(await api.key(free_org)))
    assert_error(response, 403, "insufficient_permissions")
    restricted = await api.key(api.org(Plan.PRO), permissions={Permission.AFFILIATES_READ})
    response = await api.client.get("/v1/audit/requests", headers=bearer(restricted))
    assert_error(response, 403, "insufficient_permissions")
    assert_error(await api.client.get("/v1/audit/requests"), 401, "missing_api_key")


async def test_a_test_key_sees_test_mode_requests_only(api: Api, rows: Rows) -> None:
    org = api.org()
    rows.add(org, env="live", path="/live")
    rows.add(org, env="test", path="/test")
    test_auditor = await auditor(api, org, Environment.TEST)
    assert [r["path"] for r in (await listing(api, test_auditor))["data"]] == ["/test"]
    response = await api.client.get(
        "/v1/audit/requests", params={"env": "live"}, headers=test_auditor
    )
    assert_error(response, 403, "insufficient_permissions")
    live_auditor = await auditor(api, org)
    assert [r["path"] for r in (await listing(api, live_auditor))["data"]] == ["/test", "/live"]
    assert [r["path"] for r in (await listing(api, live_auditor, env="live"))["data"]] == ["/live"]
