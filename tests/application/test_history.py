"""History from the event store: a key's lifecycle, the org's replayable feed, keys as of then."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from application.history import History, parse_moment
from application.registry import KeyRegistry
from domain.actors import OPERATOR, by_key
from domain.errors import NotFound, ValidationError
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Plan
from support.actors import key_actor, user_of

US = timedelta(microseconds=1)


def _key(registry: KeyRegistry, org: Organization, name: str = "Backend") -> Any:
    return registry.create_key(
        org.id, name=name, env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )


def test_key_history_shows_create_rename_roll_revoke_with_actors_times_and_changes(
    registry: KeyRegistry,
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    issued = _key(registry, org)
    key_id = issued.key.id
    admin = user_of(org)
    registry.rename_key(key_id, name="Billing", actor=admin)
    itself = key_actor(issued.key, org)
    successor = registry.roll_key(key_id, grace=timedelta(hours=1), actor=itself)
    registry.revoke_key(key_id, actor=admin, reason="leaked in a log")

    history = History(registry, user_of(org)).key_history(key_id)

    assert [e["type"] for e in history] == [
        "api_key.created",
        "api_key.renamed",
        "api_key.rolled",
        "api_key.revoked",
    ]
    assert [e["actor"] for e in history] == [OPERATOR.name, admin.name, by_key(key_id), admin.name]
    assert [e["aggregate_version"] for e in history] == [1, 2, 3, 4]
    times = [datetime.fromisoformat(e["occurred_at"]) for e in history]
    assert times == sorted(times) and times[0] == issued.key.created_on
    assert all(e["aggregate_id"] == f"key_{key_id.hex}" for e in history)
    assert all(e["org_id"] == f"org_{org.id.hex}" for e in history)

    created, renamed, rolled, revoked = history
    assert created["data"]["name"] == "Backend" and created["data"]["hint"] == issued.key.hint
    assert created["changes"]["status"] == {"from": None, "to": "active"}
    assert renamed["changes"] == {"name": {"from": "Backend", "to": "Billing"}}
    assert rolled["data"]["successor_id"] == f"key_{successor.key.id.hex}"
    assert rolled["changes"]["status"] == {"from": "active", "to": "expiring"}
    assert rolled["changes"]["rolled_to"]["to"] == f"key_{successor.key.id.hex}"
    assert revoked["data"] == {"reason": "leaked in a log"}
    assert revoked["changes"]["status"] == {"from": "expiring", "to": "revoked"}
    assert revoked["changes"]["revoked_by"] == {"from": None, "to": admin.name}

    text = repr(history)
    assert issued.key.key_hash not in text and issued.secret not in text
    assert "key_hash" not in text


def test_key_history_of_another_orgs_key_or_an_unknown_one_is_not_found(
    registry: KeyRegistry,
) -> None:
    mine = registry.register_organization("Mine", Plan.PRO, OPERATOR)
    theirs = registry.register_organization("Theirs", Plan.PRO, OPERATOR)
    their_key = _key(registry, theirs)
    with pytest.raises(NotFound):
        History(registry, user_of(mine)).key_history(their_key.key.id)
    with pytest.raises(NotFound):
        History(registry, OPERATOR).key_history(mine.id)  # an org is not a key
    assert len(History(registry, user_of(theirs)).key_history(their_key.key.id)) == 1


def _all_pages(history: History, org: Organization, limit: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = history.org_events(org.id, after=after, limit=limit)
        events.extend(page.events)
        if page.next_position is None:
            return events
        assert page.next_position > after
        after = page.next_position


def test_the_org_feed_is_replayable_paginated_by_position_and_holds_only_that_org(
    registry: KeyRegistry,
) -> None:
    a = registry.register_organization("A", Plan.PRO, OPERATOR)
    b = registry.register_organization("B", Plan.PRO, OPERATOR)
    a_keys = []
    for i in range(4):
        a_keys.append(_key(registry, a, f"a{i}"))
        b_key = _key(registry, b, f"b{i}")
        registry.rename_key(b_key.key.id, name=f"b{i}!", actor=OPERATOR)
    registry.roll_key(a_keys[0].key.id, grace=timedelta(0), actor=OPERATOR)
    registry.revoke_key(a_keys[1].key.id, actor=OPERATOR)
    registry.change_plan(a.id, Plan.AGENCY, OPERATOR)

    history = History(registry, OPERATOR)
    everything = history.org_events(a.id, after=0, limit=1000)
    assert everything.next_position is None  # the head was reached
    events = everything.events
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert {e["org_id"] for e in events} == {f"org_{a.id.hex}"}
    types = [e["type"] for e in events]
    assert types[0] == "organization.registered"
    assert types.count("api_key.created") == 5  # four keys and one successor
    assert types.count("organization.key_added") == 5
    assert "api_key.rolled" in types and "api_key.revoked" in types
    assert types[-1] == "organization.plan_changed"
    assert "key_hash" not in repr(events)

    # Same request, same answer; pages of any size add up to the whole.
    assert history.org_events(a.id, after=0, limit=4) == history.org_events(a.id, after=0, limit=4)
    for limit in (1, 3, 7):
        assert _all_pages(history, a, limit) == events
    middle = positions[5]
    assert history.org_events(a.id, after=middle, limit=1000).events == events[6:]

    # A reader that scans only a few notifications per request still sees everything.
    small = History(registry, OPERATOR, page_size=2, max_scan=5)
    assert _all_pages(small, a, 2) == events

    b_events = history.org_events(b.id, after=0, limit=1000).events
    assert {e["org_id"] for e in b_events} == {f"org_{b.id.hex}"}
    assert not set(positions) & {e["position"] for e in b_events}


def test_the_feed_decodes_only_the_orgs_events_not_everybody_elses(
    registry: KeyRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = registry.register_organization("Busy", Plan.PRO, OPERATOR)
    quiet = registry.register_organization("Quiet", Plan.PRO, OPERATOR)
    key = _key(registry, busy)
    for i in range(300):
        registry.rename_key(key.key.id, name=f"name {i}", actor=OPERATOR)
    _key(registry, quiet)

    decoded = 0
    original = registry.mapper.to_domain_event

    def counting(stored: Any) -> Any:
        nonlocal decoded
        decoded += 1
        return original(stored)

    monkeypatch.setattr(registry.mapper, "to_domain_event", counting)
    page = History(registry, OPERATOR, page_size=50).org_events(quiet.id, after=0, limit=100)
    assert [e["type"] for e in page.events] == [
        "organization.registered",
        "organization.key_added",
        "api_key.created",
    ]
    assert decoded <= 5  # three events (plus the org's own, read to learn its keys)


def test_keys_as_of_answers_for_a_key_created_rolled_and_revoked_at_known_instants(
    registry: KeyRegistry,
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    issued = _key(registry, org)
    key_id = issued.key.id
    created_at = issued.key.created_on
    renamed_at = registry.rename_key(key_id, name="Billing", actor=OPERATOR).modified_on
    successor = registry.roll_key(key_id, grace=timedelta(hours=1), actor=OPERATOR)
    rolled_at = registry.get_key(key_id).modified_on
    successor_created_at = successor.key.created_on
    registry.change_plan(org.id, Plan.FREE, OPERATOR)
    plan_changed_at = registry.get_organization(org.id).modified_on
    revoked_at = registry.revoke_key(key_id, actor=OPERATOR).revoked_at
    assert revoked_at is not None
    history = History(registry, OPERATOR)

    def as_of(moment: datetime) -> dict[str, dict[str, Any]]:
        return {v["id"]: v for v in history.keys_as_of(org.id, moment)}

    old, new = f"key_{key_id.hex}", f"key_{successor.key.id.hex}"
    assert as_of(org.created_on - US) == {}
    assert as_of(created_at - US) == {}
    at_creation = as_of(created_at)
    assert list(at_creation) == [old]
    assert at_creation[old]["status"] == "active" and at_creation[old]["name"] == "Backend"
    assert "audit:read" in at_creation[old]["permissions"]
    assert as_of(renamed_at - US)[old]["name"] == "Backend"
    assert as_of(renamed_at)[old]["name"] == "Billing"

    before_roll = as_of(rolled_at - US)
    assert before_roll[old]["status"] == "active" and before_roll[old]["rolled_to"] is None
    assert new not in as_of(successor_created_at - US)
    after_roll = as_of(max(rolled_at, successor_created_at))
    assert after_roll[old]["status"] == "expiring" and after_roll[old]["rolled_to"] == new
    assert after_roll[new]["status"] == "active" and after_roll[new]["rolled_from"] == old

    assert "audit:read" not in as_of(plan_changed_at)[old]["permissions"]  # plan then
    assert as_of(revoked_at - US)[old]["status"] == "expiring"
    after_revoke = as_of(revoked_at)
    assert after_revoke[old]["status"] == "revoked"
    assert after_revoke[old]["revoked_at"] == revoked_at.isoformat().replace("+00:00", "Z")
    assert after_revoke[new]["status"] == "active"
    assert list(after_revoke) == [old, new]  # oldest first, like the live list
    assert all("key" not in v and "key_hash" not in v for v in after_revoke.values())


def test_keys_as_of_renders_like_the_live_list_at_the_same_instant(registry: KeyRegistry) -> None:
    from application.views import api_key_view

    org = registry.register_organization("Acme", Plan.AGENCY, OPERATOR)
    registry.set_rate_limit(org.id, 5000, OPERATOR)
    for i in range(3):
        _key(registry, org, f"k{i}")
    now = datetime.now(UTC)
    live_org = registry.get_organization(org.id)
    live = [api_key_view(k, live_org, now) for k in registry.list_keys(org.id)]
    assert History(registry, OPERATOR).keys_as_of(org.id, now) == live


def test_as_of_must_be_a_zoned_past_instant(registry: KeyRegistry) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    history = History(registry, OPERATOR)
    with pytest.raises(ValidationError):
        history.keys_as_of(org.id, datetime(2026, 1, 1))  # naive
    with pytest.raises(ValidationError):
        history.keys_as_of(org.id, datetime.now(UTC) + timedelta(days=1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01t12:00:00.5z", datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2026-03-01T14:00:00+02:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T14:00:00 02:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),  # `+` lost in a URL
        ("2026-03-01 12:00:00Z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
    ],
)
def test_parse_moment_reads_rfc_3339(text: str, expected: datetime) -> None:
    assert parse_moment(text) == expected


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2026-03-01", "2026-03-01T12:00:00", "2026-02-30T12:00:00Z"]
)
def test_parse_moment_refuses_what_is_not_a_zoned_rfc_3339_time(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_moment(text)
