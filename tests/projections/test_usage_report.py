"""Reading usage for an actor (`projections.usage_report`): the window asked for, checked and
widened to whole buckets; the scoping every reader shares (the API, the dashboard, the CLI);
and `dense`, which fills in the buckets without requests for charts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.request_events import new_event_id
from adapters.settings import Settings
from application.registry import KeyRegistry
from domain.actors import OPERATOR, Actor
from domain.api_key import ApiKey
from domain.errors import NotFound, PermissionExceeded, ValidationError
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Permission, Plan
from domain.roles import Role
from projections.request_audit import AuditEntry
from projections.usage import Granularity, UsageCounters, iso
from projections.usage_query import UsageRow, UsageStore
from projections.usage_report import (
    DEFAULT_SPAN,
    LATEST,
    MAX_SPAN_DAYS,
    UsageReports,
    UsageWindow,
    dense,
)
from projections.usage_store import open_usage_store
from support.actors import key_actor, user_of

MINUTE, HOUR, DAY = Granularity.MINUTE, Granularity.HOUR, Granularity.DAY


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


NOW = at("2026-03-01T10:20:30")


def span(window: UsageWindow) -> tuple[str, str, str]:
    return window.granularity.label, iso(window.start), iso(window.end)


# -- the window -----------------------------------------------------------------------------


def test_without_a_range_the_window_ends_with_the_bucket_holding_now() -> None:
    assert span(UsageWindow.of(None, None, None, now=NOW)) == (
        "hour",  # when none is named
        "2026-02-28T11:00:00Z",
        "2026-03-01T11:00:00Z",
    )
    assert span(UsageWindow.of("minute", None, None, now=NOW)) == (
        "minute",
        "2026-03-01T09:21:00Z",
        "2026-03-01T10:21:00Z",
    )
    assert span(UsageWindow.of("day", None, None, now=NOW)) == (
        "day",
        "2026-01-31T00:00:00Z",
        "2026-03-02T00:00:00Z",
    )
    for granularity in Granularity:
        window = UsageWindow.of(granularity.label, None, None, now=NOW)
        assert window.end - window.start == DEFAULT_SPAN[granularity]
        assert window.start <= NOW < window.end


def test_now_on_a_boundary_includes_the_bucket_that_just_began() -> None:
    on_the_hour = at("2026-03-01T11:00:00")
    assert span(UsageWindow.of("hour", None, None, now=on_the_hour)) == (
        "hour",
        "2026-02-28T12:00:00Z",
        "2026-03-01T12:00:00Z",
    )
    midnight = at("2026-03-02T00:00:00")
    assert UsageWindow.of("day", None, None, now=midnight).end == at("2026-03-03T00:00:00")


def test_a_range_is_widened_to_whole_buckets() -> None:
    def window(granularity: str, start: str | None, end: str | None) -> tuple[str, str, str]:
        return span(
            UsageWindow.of(
                granularity,
                None if start is None else at(start),
                None if end is None else at(end),
                now=NOW,
            )
        )

    assert window("hour", "2026-03-01T08:20:00", "2026-03-01T09:40:00") == (
        "hour",
        "2026-03-01T08:00:00Z",
        "2026-03-01T10:00:00Z",
    )
    assert window("minute", "2026-03-01T08:20:59", "2026-03-01T08:21:00") == (
        "minute",
        "2026-03-01T08:20:00Z",
        "2026-03-01T08:21:00Z",  # an end on a boundary stays: it is exclusive
    )
    assert window("day", "2026-02-10T23:59:59", "2026-02-11T00:00:01") == (
        "day",
        "2026-02-10T00:00:00Z",
        "2026-02-12T00:00:00Z",
    )
    assert window("hour", "2026-03-01T07:30:00", None) == (  # from only: up to now
        "hour",
        "2026-03-01T07:00:00Z",
        "2026-03-01T11:00:00Z",
    )
    assert window("hour", None, "2026-02-20T12:00:00") == (  # to only: the default span
        "hour",
        "2026-02-19T12:00:00Z",
        "2026-02-20T12:00:00Z",
    )
    assert window("DAY", None, None)[0] == "day"  # names in any case


def test_the_buckets_of_a_window() -> None:
    window = UsageWindow.of("minute", at("2026-03-01T10:00:00"), at("2026-03-01T10:03:00"), now=NOW)
    assert [iso(b) for b in window.buckets] == [
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:01:00Z",
        "2026-03-01T10:02:00Z",
    ]


@pytest.mark.parametrize(
    ("granularity", "start", "end", "message"),
    [
        ("week", None, None, "granularity: expected minute, hour or day, not 'week'"),
        ("minutes", None, None, "granularity"),
        ("x" * 100, None, None, "not '" + "x" * 20 + "'"),
        ("hour", -1, NOW, "from: expected a time between 1970 and 2999"),
        ("hour", None, LATEST + 1, "to: expected a time between 1970 and 2999"),
        ("hour", NOW, NOW, "from must be before to"),
        ("hour", NOW, NOW - 1, "from must be before to"),
        ("minute", NOW - 7 * 86_400 - 60, NOW, "a window of minutes spans at most 7 days"),
        ("minute", NOW - 7 * 86_400 - 1, NOW, "a window of minutes spans at most 7 days"),
        ("minute", NOW - 7 * 86_400 - 60, None, "a window of minutes spans at most 7 days"),
        # 7 days asked: answered, although 7 days and a minute once widened to whole minutes
        ("minute", NOW - 7 * 86_400, NOW, None),
        ("minute", None, NOW + 8 * 86_400, None),  # to only: fine (the default hour)
        ("hour", at("2026-01-01T00:00:00"), at("2026-04-01T01:00:00"), "at most 90 days"),
        ("day", at("2015-12-01T00:00:00"), at("2026-01-01T00:00:00"), "at most 3660 days"),
    ],
)
def test_a_window_that_cannot_be_answered_is_refused(
    granularity: str, start: int | None, end: int | None, message: str | None
) -> None:
    if message is None:
        UsageWindow.of(granularity, start, end, now=NOW)
        return
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")) as refused:
        UsageWindow.of(granularity, start, end, now=NOW)
    assert refused.value.code == "validation_error"  # 422 from the API


def test_each_granularity_answers_up_to_its_longest_window() -> None:
    end = at("2026-03-01T00:00:00")
    for granularity, days in MAX_SPAN_DAYS.items():
        longest = UsageWindow.of(granularity.label, end - days * 86_400, end, now=NOW)
        assert longest.end - longest.start == days * 86_400
        with pytest.raises(ValidationError):
            UsageWindow.of(granularity.label, end - days * 86_400 - 1, end, now=NOW)
    assert MAX_SPAN_DAYS == {MINUTE: 7, HOUR: 90, DAY: 3_660}


def test_the_span_asked_for_is_checked_before_it_is_widened() -> None:
    # `from=now-7d&to=now&granularity=minute`, `icodrip usage --since 7d --granularity minute`:
    # the span asked is the limit; widened to whole buckets it is one bucket more, and answered.
    assert NOW % 60  # neither end on a boundary: each end widens
    for granularity, days in MAX_SPAN_DAYS.items():
        size, limit = granularity.seconds, days * 86_400
        for end in (NOW, None):
            window = UsageWindow.of(granularity.label, NOW - limit, end, now=NOW)
            assert window.end - window.start == limit + size, (granularity, end)
            assert window.start <= NOW - limit and window.end >= NOW
        # `from` and `to` given: a second more than the limit is refused.
        with pytest.raises(ValidationError, match=f"at most {days} days"):
            UsageWindow.of(granularity.label, NOW - limit - 1, NOW, now=NOW)
        # Without `to` the window ends with the current bucket (our clock, not the caller's):
        # refused when it would span more than the limit and the one bucket widening adds.
        UsageWindow.of(granularity.label, NOW - limit - 1, None, now=NOW + 1)
        with pytest.raises(ValidationError, match=f"at most {days} days"):
            UsageWindow.of(granularity.label, NOW - limit - size, None, now=NOW)
    # A fractional `now`, as the CLI has it (`--since 7d`: from `now - 7 days`, no `to`).
    for now in (1_772_360_430.123_456_7, 1_772_360_430.987_654_3, 2_000_000_000.1):
        window = UsageWindow.of("minute", now - 7 * 86_400.0, None, now=now)
        assert window.end - window.start == 7 * 86_400 + 60
    # On boundaries, nothing to widen: exactly the limit (`test_each_granularity_…` above).


# -- who reads what ---------------------------------------------------------------------------

T0 = at("2026-03-01T10:00:00")
WINDOW = UsageWindow(MINUTE, T0, T0 + 600)


def entry(key: ApiKey, minute: int, status: int = 200) -> AuditEntry:
    return AuditEntry(
        org_id=format_org_id(key.org_id),
        seq=0,
        event_id=new_event_id(),
        request_id=new_event_id(),
        key_id=format_key_id(key.id),
        key_hint=None,
        env=key.env.value,
        method="GET",
        route="/v1/affiliates",
        path="/v1/affiliates",
        status=status,
        client_addr=None,
        user_agent=None,
        latency_ms=2.0,
        occurred_at=T0 + 60 * minute + 1,
    )


class Acme:
    """An organization with a live, a test, a restricted and a public key; a stranger's key."""

    def __init__(self, registry: KeyRegistry) -> None:
        self.registry = registry
        self.org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
        self.live = self.key("Live", Environment.LIVE)
        self.test = self.key("Test", Environment.TEST)
        self.restricted = self.key(
            "Keys only", Environment.LIVE, permissions=frozenset({Permission.API_KEYS_READ})
        )
        self.public = self.key("Browser", Environment.LIVE, key_type=KeyType.PUBLIC)
        self.other = registry.register_organization("Other", Plan.PRO, OPERATOR)
        self.stranger = self.key("Stranger", Environment.LIVE, org=self.other)

    def key(
        self,
        name: str,
        env: Environment,
        *,
        org: Organization | None = None,
        key_type: KeyType = KeyType.SECRET,
        permissions: frozenset[Permission] | None = None,
    ) -> ApiKey:
        issued = self.registry.create_key(
            (org or self.org).id,
            name=name,
            env=env,
            key_type=key_type,
            actor=OPERATOR,
            permissions=permissions,
        )
        return issued.key

    def acting(self, key: ApiKey) -> Actor:
        actor: Actor = key_actor(key, self.registry.get_organization(key.org_id))
        return actor


@pytest.fixture
def store(settings: Settings) -> Iterator[UsageStore]:
    opened = open_usage_store(settings)
    yield opened
    opened.close()


@pytest.fixture
def acme(registry: KeyRegistry, store: UsageStore) -> Acme:
    acme = Acme(registry)
    batch = [
        entry(acme.live, 0),
        entry(acme.live, 3, 500),
        *(entry(acme.test, m) for m in (1, 1, 2)),
        *(entry(acme.stranger, m) for m in range(4)),
    ]
    store.write([(1, batch)], 1)
    return acme


@pytest.fixture
def reports(registry: KeyRegistry, store: UsageStore) -> UsageReports:
    return UsageReports(registry, store)


def seen(rows: Any) -> list[tuple[str, str, int]]:
    return [(row.key_id, iso(row.start), row.counters.requests) for row in rows]


def test_the_operator_sees_every_key_of_the_organization_and_both_environments(
    acme: Acme, reports: UsageReports
) -> None:
    report = reports.report(OPERATOR, acme.org.id, WINDOW)
    live, test = format_key_id(acme.live.id), format_key_id(acme.test.id)
    assert sorted(seen(report.rows)) == sorted(
        [
            (live, "2026-03-01T10:00:00Z", 1),
            (live, "2026-03-01T10:03:00Z", 1),
            (test, "2026-03-01T10:01:00Z", 2),
            (test, "2026-03-01T10:02:00Z", 1),
        ]
    )
    assert report.org_id == format_org_id(acme.org.id) and report.env is None
    assert (report.totals.requests, report.totals.server_errors) == (5, 1)
    assert report.next_cursor is None

    one = reports.report(OPERATOR, acme.org.id, WINDOW, key_id=acme.live.id)
    assert {row.key_id for row in one.rows} == {live} and one.totals.requests == 2


def test_another_organizations_key_does_not_exist(acme: Acme, reports: UsageReports) -> None:
    for actor in (OPERATOR, acme.acting(acme.live)):
        with pytest.raises(NotFound):
            reports.report(actor, acme.org.id, WINDOW, key_id=acme.stranger.id)
        with pytest.raises(NotFound):
            reports.report(actor, acme.org.id, WINDOW, key_id=uuid.uuid4())
    with pytest.raises(NotFound):  # nor does another organization, for a key of this one
        reports.report(acme.acting(acme.live), acme.other.id, WINDOW)
    with pytest.raises(NotFound):  # nor for one of its users
        reports.report(user_of(acme.other), acme.org.id, WINDOW)


def test_a_test_key_sees_test_mode_usage_only(acme: Acme, reports: UsageReports) -> None:
    tester = acme.acting(acme.test)
    report = reports.report(tester, acme.org.id, WINDOW)
    assert report.env == "test" and report.totals.requests == 3
    assert {row.key_id for row in report.rows} == {format_key_id(acme.test.id)}
    assert [row.key_id for row in reports.rows(tester, acme.org.id, WINDOW)] == [
        format_key_id(acme.test.id)
    ] * 2
    with pytest.raises(NotFound):  # a live key does not exist for it
        reports.report(tester, acme.org.id, WINDOW, key_id=acme.live.id)
    with pytest.raises(PermissionExceeded):
        reports.report(tester, acme.org.id, WINDOW, env=Environment.LIVE)

    live = reports.report(acme.acting(acme.live), acme.org.id, WINDOW, env=Environment.TEST)
    assert live.env == "test" and live.totals.requests == 3  # a live key may filter


def test_a_key_without_usage_read_is_refused(acme: Acme, reports: UsageReports) -> None:
    for key in (acme.restricted, acme.public):
        with pytest.raises(PermissionExceeded, match="usage:read"):
            reports.report(acme.acting(key), acme.org.id, WINDOW)
        with pytest.raises(PermissionExceeded):  # asked at once, before the first row
            reports.rows(acme.acting(key), acme.org.id, WINDOW, key_id=acme.live.id)
    auditor = reports.report(user_of(acme.org, Role.AUDITOR), acme.org.id, WINDOW)
    assert auditor.totals.requests == 5  # every role reads usage


def test_pages_follow_the_cursor_and_keep_the_windows_totals(
    acme: Acme, reports: UsageReports
) -> None:
    everything = seen(reports.report(OPERATOR, acme.org.id, WINDOW).rows)
    pages: list[tuple[str, str, int]] = []
    after = None
    while True:
        page = reports.report(OPERATOR, acme.org.id, WINDOW, after=after, limit=3)
        assert page.totals.requests == 5
        pages.extend(seen(page.rows))
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert pages == everything and len(everything) == 4

    assert seen(reports.rows(OPERATOR, acme.org.id, WINDOW)) == everything
    for size in (1, 2, 3, 4, 5):  # rows() reads page after page
        assert seen(reports.rows(OPERATOR, acme.org.id, WINDOW, page_size=size)) == everything


# -- dense ----------------------------------------------------------------------------------


def test_dense_fills_in_the_buckets_without_requests() -> None:
    window = UsageWindow(MINUTE, T0, T0 + 300)

    def row(key: str, minute: int, requests: int) -> UsageRow:
        return UsageRow(key, T0 + 60 * minute, UsageCounters(requests=requests))

    series = dense([row("key_a", 1, 4), row("key_a", 4, 2), row("key_b", 0, 7)], window)
    assert list(series) == ["key_a", "key_b"]
    assert [c.requests for c in series["key_a"]] == [0, 4, 0, 0, 2]
    assert [c.requests for c in series["key_b"]] == [7, 0, 0, 0, 0]
    assert all(len(cells) == len(window.buckets) for cells in series.values())
    assert series["key_a"][0] is not series["key_a"][2]  # each empty bucket its own
    assert dense([], window) == {}

    hours = UsageWindow(HOUR, T0, T0 + 3 * 3_600)
    [(key, cells)] = dense(
        [UsageRow("key_c", T0 + 3_600, UsageCounters(requests=1))], hours
    ).items()
    assert key == "key_c" and [c.requests for c in cells] == [0, 1, 0]
