"""`GET /v1/audit/requests`: which key made which request, for the key's organization only.

JSON pages by default (`{"object": "list", "data": [...], "next_cursor": ...}`, newest first);
with `Accept: text/csv` or `Accept: application/x-ndjson` the whole filtered set is streamed
(page by page from the store, so memory stays flat). A test key sees test-mode requests only;
a live key sees both environments and may filter with `env`. Every row carries its place in
the organization's hash chain (`sequence`, `prev_hash`, `row_hash`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import dataclasses
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, MediaType, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from api.errors import ApiError
from api.objects.audit import AuditRequest, AuditRequestList
from api.services import Services
from domain.access import Command, visible_envs
from domain.errors import ValidationError
from domain.ids import parse_key_id
from domain.key_format import Environment
from projections.key_lookup import Principal
from projections.request_audit import NO_ORG, AuditRow
from projections.request_audit_live import LiveRequestAuditStore
from projections.request_audit_query import AuditQuery

CSV = "text/csv"
NDJSON = "application/x-ndjson"
EXPORT_PAGE = 2000
CSV_COLUMNS = (
    "id",
    "occurred_at",
    "organization",
    "key_id",
    "key_hint",
    "env",
    "method",
    "route",
    "path",
    "status",
    "client_addr",
    "user_agent",
    "latency_ms",
    "request_id",
    "sequence",
    "prev_hash",
    "row_hash",
)
_METHOD = re.compile(r"^[A-Za-z]{1,16}$")
_STATUS_CLASS = re.compile(r"^([1-5])xx$", re.IGNORECASE)
_json = msgspec.json.Encoder()


def iso_time(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def audit_request_view(row: AuditRow) -> dict[str, Any]:
    """The `audit_request` object: one request, the key that made it, its place in the chain."""
    return {
        "id": row.event_id,
        "object": "audit_request",
        "occurred_at": iso_time(row.occurred_at),
        "occurred_at_unix": row.occurred_at,
        "organization": None if row.org_id == NO_ORG else row.org_id,
        "key_id": row.key_id,
        "key_hint": row.key_hint,
        "env": row.env,
        "method": row.method,
        "route": row.route,
        "path": row.path,
        "status": row.status,
        "client_addr": row.client_addr,
        "user_agent": row.user_agent,
        "latency_ms": row.latency_ms,
        "request_id": row.request_id,
        "sequence": row.seq,
        "prev_hash": row.prev_hash,
        "row_hash": row.row_hash,
    }


def _csv_cell(value: Any) -> Any:
    """Neutralize spreadsheet formulas in client-controlled text (OWASP CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_lines(rows: list[AuditRow], header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for row in rows:
        view = audit_request_view(row)
        writer.writerow([_csv_cell(view[column]) for column in CSV_COLUMNS])
    return out.getvalue()


def _ndjson_lines(rows: list[AuditRow]) -> bytes:
    return b"".join(_json.encode(audit_request_view(row)) + b"\n" for row in rows)


# -- cursors and filters ------------------------------------------------------------------------


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"ar1:{seq}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        prefix, _, seq = raw.partition(":")
        if prefix != "ar1" or not (seq.isascii() and seq.isdigit()):
            raise ValueError(raw)
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "validation_error", "cursor: not a cursor from this API") from None


def parse_time(name: str, text: str | None) -> float | None:
    """An RFC 3339 time (with `Z` or an offset) as Unix seconds."""
    if text is None:
        return None
    candidate = text.strip().replace(" ", "+")  # an unescaped `+` arrives as a space
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or "T" not in candidate.upper():
        raise ApiError(
            422,
            "validation_error",
            f"{name}: expected an RFC 3339 time with an offset, e.g. 2024-04-01T00:00:00Z",
        )
    return moment.timestamp()


def parse_status(text: str | None) -> tuple[int | None, int | None]:
    """`404` → (404, 404); `4xx` → (400, 499)."""
    if text is None:
        return None, None
    text = text.strip()
    if text.isascii() and text.isdigit() and 100 <= int(text) <= 599:
        return int(text), int(text)
    match = _STATUS_CLASS.match(text)
    if match:
        first = int(match.group(1)) * 100
        return first, first + 99
    raise ApiError(
        422, "validation_error", "status: expected an HTTP status (404) or a class (4xx)"
    )


def build_query(
    principal: Principal,
    *,
    key_id: str | None,
    status: str | None,
    method: str | None,
    route: str | None,
    since: str | None,
    until: str | None,
    env: str | None,
    cursor: str | None,
) -> AuditQuery:
    """The caller's filters, always inside its own organization (and test mode for test keys)."""
    if key_id is not None:
        try:
            parse_key_id(key_id)
        except ValidationError as error:
            raise ApiError(422, "validation_error", f"key_id: {error.message}") from None
    if method is not None and not _METHOD.match(method):
        raise ApiError(422, "validation_error", "method: expected an HTTP method, e.g. GET")
    if route is not None and len(route) > 300:
        raise ApiError(422, "validation_error", "route: at most 300 characters")
    if env is not None and env not in (Environment.LIVE.value, Environment.TEST.value):
        raise ApiError(422, "validation_error", "env: expected live or test")
    envs = visible_envs(principal)
    if env is not None and env not in envs:
        raise ApiError(403, "insufficient_permissions", "a test key sees test-mode requests only")
    if len(envs) == 1:
        (only,) = envs
        env = only.value
    status_min, status_max = parse_status(status)
    since_ts, until_ts = parse_time("since", since), parse_time("until", until)
    if since_ts is not None and until_ts is not None and since_ts >= until_ts:
        raise ApiError(422, "validation_error", "since must be before until")
    return AuditQuery(
        org_id=principal.org_id_text,
        env=env,
        key_id=key_id,
        status_min=status_min,
        status_max=status_max,
        method=None if method is None else method.upper(),
        route=route,
        since=since_ts,
        until=until_ts,
        before_seq=None if cursor is None else decode_cursor(cursor),
    )


async def export_rows(
    store: LiveRequestAuditStore, query: AuditQuery, media_type: str
) -> AsyncIterator[bytes]:
    """The whole filtered set, newest first, page by page (keyset on the chain sequence)."""
    first = True
    while True:
        rows = await asyncio.to_thread(store.page, query, EXPORT_PAGE)
        if media_type == CSV:
            chunk = _csv_lines(rows, header=first).encode()
        else:
            chunk = _ndjson_lines(rows)
        first = False
        if chunk:
            yield chunk
        if len(rows) < EXPORT_PAGE:
            return
        query = dataclasses.replace(query, before_seq=rows[-1].seq)


class AuditRequestsController(Controller):
    path = "/v1/audit/requests"
    tags = ["audit"]
    security = [{"BearerAuth": []}]

    @get(
        "/",
        opt={"command": Command.READ_AUDIT},
        responses={
            200: ResponseSpec(
                AuditRequestList,
                description="A page of requests (JSON), or every matching row (CSV, NDJSON)",
                generate_examples=False,
            )
        },
        description=(
            "Filters: key_id, status (404 or 4xx), method, route (the route template, e.g. "
            "/v1/affiliates), since (inclusive) and until (exclusive) as RFC 3339 times, env. "
            "`Accept: text/csv` or `application/x-ndjson` streams every matching row."
        ),
    )
    async def list_requests(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        key_id: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        method: FromQuery[str | None] = None,
        route: FromQuery[str | None] = None,
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        env: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        cursor: FromQuery[str | None] = None,
    ) -> Response[Any]:
        """The organization's requests made with a key, newest first."""
        query = build_query(
            request.user,
            key_id=key_id,
            status=status,
            method=method,
            route=route,
            since=since,
            until=until,
            env=env,
            cursor=cursor,
        )
        audit_store = services.audit
        media_type = request.accept.best_match([MediaType.JSON.value, CSV, NDJSON])
        if media_type in (CSV, NDJSON):
            suffix = "csv" if media_type == CSV else "ndjson"
            return Stream(
                export_rows(audit_store, query, media_type),
                media_type=media_type,  # Litestar adds `; charset=utf-8` to text types
                headers={
                    "Content-Disposition": f'attachment; filename="audit-requests.{suffix}"',
                    "Cache-Control": "no-store",
                },
            )
        rows = await asyncio.to_thread(audit_store.page, query, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return Response(
            AuditRequestList(
                data=msgspec.convert([audit_request_view(row) for row in rows], list[AuditRequest]),
                next_cursor=encode_cursor(rows[-1].seq) if more else None,
            ),
            headers={"Cache-Control": "no-store"},
        )
