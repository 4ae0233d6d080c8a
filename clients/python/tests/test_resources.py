"""Affiliates, usage, the audit log and event tracking through the client, on a real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from domain.plans import Permission
from icodrip_client import Icodrip, NotFoundError, PermissionDeniedError, UnprocessableEntityError
from real_server import RealServer, Stage


@dataclass(frozen=True)
class World:
    server: RealServer
    admin: str
    publishable: str
    org_id: str


@pytest.fixture(scope="module")
def world(stage: Stage) -> World:
    org = stage.org()
    admin = stage.key(org, name="admin")
    publishable = stage.key(org, public=True, permissions={Permission.EVENTS_WRITE})
    return World(stage.start(), admin, publishable, f"org_{org.id.hex}")


@pytest.fixture
def client(world: World) -> Iterator[Icodrip]:
    with world.server.client(world.admin) as client:
        yield client


def test_affiliates_are_created_read_and_listed_page_by_page(client: Icodrip) -> None:
    names = [f"affiliate {uuid.uuid4().hex[:6]}" for _ in range(3)]
    made = [client.affiliates.create(name=name, email="ana@example.com") for name in names]

    pages = list(client.affiliates.list(limit=2).iter_pages())
    every = [affiliate.id for affiliate in client.affiliates.list(limit=2)]

    assert client.affiliates.get(made[0].id) == made[0]
    assert made[0].created_at.tzinfo is not None  # Unix seconds on the wire, a datetime here
    assert len(pages) >= 2 and all(len(page.data) <= 2 for page in pages)
    assert [a.id for a in made] == [i for i in every if i in {a.id for a in made}]


def test_an_unknown_affiliate_is_not_found(client: Icodrip) -> None:
    with pytest.raises(NotFoundError):
        client.affiliates.get("aff_" + "0" * 32)


def test_usage_answers_a_window_with_its_totals(client: Icodrip) -> None:
    now = datetime.now(UTC)

    report = client.usage.get(granularity="minute", start=now - timedelta(minutes=5), end=now)

    assert report.granularity == "minute"
    assert report.start <= now - timedelta(minutes=5) < report.end
    assert report.totals.requests >= 0
    assert list(client.usage.list(granularity="hour")) == list(
        client.usage.get(granularity="hour").data
    )


def test_usage_refuses_a_window_too_long_for_minutes(client: Icodrip) -> None:
    now = datetime.now(UTC)

    with pytest.raises(UnprocessableEntityError) as caught:
        client.usage.get(granularity="minute", start=now - timedelta(days=30), end=now)

    assert caught.value.code == "validation_error"


def test_a_naive_time_is_refused_before_sending(client: Icodrip) -> None:
    with pytest.raises(ValueError, match="time zone"):
        client.usage.get(start=datetime(2026, 1, 1))  # no tzinfo: the point of the test


def test_the_audit_feed_tells_what_happened_to_the_organization(
    client: Icodrip, world: World
) -> None:
    created = client.api_keys.create(name="audited")

    events = list(client.audit.events(limit=2))
    positions = [event.position or 0 for event in events]

    assert events[0].type == "organization.registered"
    assert {e.org_id for e in events} == {world.org_id}
    assert ("api_key.created", created.id) in [(e.type, e.aggregate_id) for e in events]
    assert 0 not in positions and positions == sorted(positions)  # the feed's positions, in order


def test_audit_requests_come_as_a_page(client: Icodrip) -> None:
    page = client.audit.requests(status="4xx", limit=10)

    assert all(400 <= row.status < 500 for row in page.data)
    assert len(page.data) <= 10


def test_a_public_key_tracks_events(world: World) -> None:
    with world.server.client(world.publishable) as browserless:
        tracked = browserless.events.track("signup", {"plan": "pro"})

    assert tracked.event == "signup" and tracked.id.startswith("evt_")
    assert tracked.env == "live"


def test_tracked_events_are_listed_back_page_by_page(client: Icodrip) -> None:
    name = f"listed {uuid.uuid4().hex[:6]}"
    tracked = [client.events.track(name, {"step": step}) for step in range(3)]

    pages = list(client.events.list(limit=2).iter_pages())
    listed = [event for page in pages for event in page.data if event.event == name]

    assert len(pages) >= 2 and all(len(page.data) <= 2 for page in pages)
    assert [event.id for event in listed] == [event.id for event in tracked]  # oldest first
    assert [event.properties for event in listed] == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert {event.key_id for event in listed} == {client.api_keys.current().id}


def test_a_batch_of_events_is_stored_as_sent_in_order(client: Icodrip) -> None:
    name = f"batched {uuid.uuid4().hex[:6]}"
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    tracked = client.events.track_batch(
        [
            {"event": name, "properties": {"n": 1}, "timestamp": when},
            {"event": name, "properties": {"n": 2}},
            {"event": name},
        ]
    )

    assert [event.event for event in tracked] == [name] * 3
    assert len({event.id for event in tracked}) == 3
    assert tracked[0].timestamp == when
    listed = [event for event in client.events.list(limit=100) if event.event == name]
    assert {event.id: event.properties for event in listed} == {
        tracked[0].id: {"n": 1},
        tracked[1].id: {"n": 2},
        tracked[2].id: {},
    }


def test_a_public_key_may_do_nothing_else(world: World) -> None:
    with (
        world.server.client(world.publishable) as public,
        pytest.raises(PermissionDeniedError) as caught,
    ):
        public.api_keys.current()

    assert caught.value.code == "public_key_not_allowed"


def test_any_route_can_be_called_by_path(client: Icodrip) -> None:
    answer = client.request("GET", "/v1/affiliates", params={"limit": 1})

    assert answer["object"] == "list"
