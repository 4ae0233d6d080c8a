"""`GET /v1/usage`: each key's requests per minute, hour or day, for the key's organization only.

JSON pages by default (`{"object": "usage", …, "totals": {…}, "data": [...], "next_cursor": …}`,
rows by key, then time); with `Accept: text/csv` every row of the window is streamed (page by
page from the store, so memory stays flat). The series are sparse: a bucket in which a key made
no request is not listed. A test key sees test-mode usage only; a live key sees both
environments and may filter with `env`. The scoping and the policy are `UsageReports`'s
(`projections.usage_report`), shared with the dashboard and the CLI.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, MediaType, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from api.errors import ApiError
from api.objects.usage import UsageBucket, UsageCounts, UsageReport
from api.routes.audit_requests import parse_time
from api.services import Services
from domain.access import Command
from domain.errors import ValidationError
from domain.ids import parse_key_id
from domain.key_format import Environment
from projections.key_lookup import Principal
from projections.usage import COUNTER_FIELDS, PERCENTILES
from projections.usage_query import UsageCursor, UsageRow
from projections.usage_report import LATEST, MAX_PAGE, UsageReports, UsageWindow

CSV = "text/csv"
#: Rows read from the store per step of a CSV export.
EXPORT_PAGE = 2000
CSV_COLUMNS = ("start", "key_id", *COUNTER_FIELDS, *(name for name, _ in PERCENTILES))


def _key_id(text: str | None) -> UUID | None:
    if text is None:
        return None
    try:
        return parse_key_id(text)
    except ValidationError as error:
        raise ApiError(422, "validation_error", f"key_id: {error.message}") from None


def _env(text: str | None) -> Environment | None:
    if text is None:
        return None
    try:
        return Environment(text)
    except ValueError:
        raise ApiError(422, "validation_error", "env: expected live or test") from None


def _cursor(text: str | None) -> UsageCursor | None:
    """The cursor a `next_cursor` names: a well-formed key id and a time the API can answer
    for (a crafted one must not reach the store: SQLite's integers end at 2**63 - 1)."""
    if text is None:
        return None
    try:
        cursor = UsageCursor.decode(text)
        parse_key_id(cursor.key_id)
    except (ValueError, ValidationError):
        cursor = None
    if cursor is None or not 0 <= cursor.start <= LATEST:
        raise ApiError(422, "validation_error", "cursor: not a cursor from this API")
    return cursor


def _csv_lines(rows: Iterable[UsageRow], header: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for row in rows:
        view = row.as_dict()
        writer.writerow(["" if view[c] is None else view[c] for c in CSV_COLUMNS])
    return out.getvalue().encode()


def _take(rows: Iterator[UsageRow], count: int) -> list[UsageRow]:
    return list(itertools.islice(rows, count))


async def export_rows(first: list[UsageRow], rest: Iterator[UsageRow]) -> AsyncIterator[bytes]:
    """Every row as CSV, the header first: the `first` page (read before the response began,
    `_take`), then the `rest` read from the store in a thread page by page."""
    page, header = first, True
    while True:
        chunk = _csv_lines(page, header=header)
        header = False
        if chunk:
            yield chunk
        if len(page) < EXPORT_PAGE:
            return
        page = await asyncio.to_thread(_take, rest, EXPORT_PAGE)


class UsageController(Controller):
    path = "/v1/usage"
    tags = ["usage"]
    security = [{"BearerAuth": []}]

    @get(
        "/",
        opt={"command": Command.READ_USAGE},
        responses={
            200: ResponseSpec(
                UsageReport,
                description="A page of the window's rows and its totals (JSON), or every row (CSV)",
                generate_examples=False,
            )
        },
        description=(
            "Requests per key per bucket (minute, hour or day, aligned in UTC) in [from, to): "
            "every key of the organization, or one (`key_id`). Sparse: buckets without "
            "requests are absent. `Accept: text/csv` streams every row of the window."
        ),
    )
    async def usage(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        key_id: FromQuery[str | None] = None,
        since: Annotated[
            str | None,
            QueryParameter(name="from", description="RFC 3339 time; widened to its bucket's start"),
        ] = None,
        until: Annotated[
            str | None,
            QueryParameter(
                name="to", description="RFC 3339 time (exclusive); widened to a bucket's end"
            ),
        ] = None,
        granularity: Annotated[
            str | None, QueryParameter(description="minute, hour (default) or day")
        ] = None,
        env: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 1000,
        cursor: FromQuery[str | None] = None,
    ) -> Response[Any]:
        """The organization's usage, by key, then time, with the window's totals."""
        principal = request.user
        key = _key_id(key_id)
        environment = _env(env)
        after = _cursor(cursor)
        window = UsageWindow.of(
            granularity, parse_time("from", since), parse_time("to", until), now=time.time()
        )
        reports: UsageReports = services.usage
        media_type = request.accept.best_match([MediaType.JSON.value, CSV])
        if media_type == CSV:
            # The policy is asked (by `rows`) and the first page read here, before the response
            # begins: a refusal or a store outage is an answer (403/404, 503), not a broken 200.
            rows = await asyncio.to_thread(
                reports.rows, principal, principal.org_id, window, key_id=key, env=environment
            )
            first = await asyncio.to_thread(_take, rows, EXPORT_PAGE)
            return Stream(
                export_rows(first, rows),
                media_type=CSV,  # Litestar adds `; charset=utf-8` to text types
                headers={
                    "Content-Disposition": 'attachment; filename="usage.csv"',
                    "Cache-Control": "no-store",
                },
            )
        report = await asyncio.to_thread(
            reports.report,
            principal,
            principal.org_id,
            window,
            key_id=key,
            env=environment,
            after=after,
            limit=limit,
        )
        answer = UsageReport(
            granularity=window.granularity.label,  # type: ignore[arg-type]
            start=datetime.fromtimestamp(window.start, UTC),
            end=datetime.fromtimestamp(window.end, UTC),
            env=report.env,
            totals=msgspec.convert(report.totals.summary(), UsageCounts),
            data=msgspec.convert([row.as_dict() for row in report.rows], list[UsageBucket]),
            next_cursor=None if report.next_cursor is None else report.next_cursor.encode(),
        )
        return Response(answer, headers={"Cache-Control": "no-store"})
