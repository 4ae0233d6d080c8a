"""A key store written by the code from before issue 12 loads, reads and replays the same.

`tests/fixtures/store-before-renovation/` holds an SQLite event store written at f0098f5 (by
`tests/fixtures/make_store_before_renovation.py`, once) and what that code read back from it.
Each test opens a copy with the code of today: what was stored then must read as it did then,
through every reader the service has (aggregates, the API's views, histories, the event feed,
the wire messages, the key-lookup and expiry-index folds). This file must not change when the
domain does: a failure here means a stored history no longer reads as it was written.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters.key_events import to_message
from adapters.settings import Settings
from application.history import History
from application.registry import KeyRegistry
from application.stores import open_registry
from application.views import api_key_view, organization_view
from domain.actors import OPERATOR
from domain.ids import format_key_id, format_org_id, parse_key_id, parse_org_id
from projections.key_lookup import KeyLookup
from workers.expiry import ExpiryIndex, ExpiryWorker

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store-before-renovation"
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())
MOMENTS = {name: datetime.fromisoformat(text) for name, text in EXPECTED["moments"].items()}
KEYS: dict[str, dict[str, Any]] = EXPECTED["keys"]
ORGS: dict[str, dict[str, Any]] = EXPECTED["organizations"]


def plain(value: Any) -> Any:
    """`value` as the expectations hold it (StrEnums as text, datetimes in RFC 3339)."""
    return json.loads(json.dumps(msgspec.to_builtins(value)))


#: Permissions every plan has granted since the fixture was written (issues 13, 14, 15). What a
#: plan grants is today's rule, not stored history: an organization's view and an unrestricted
#: secret key's view list them; stored events and restricted keys do not change.
PLAN_GAINS = ("usage:read", "webhooks:read", "webhooks:write", "events:read")
#: Fields the views gained since (issue 16), as a history stored before them reads: no
#: lifetime policy, no idle revocation, no unused-key warning.
VIEW_GAINS: dict[str, dict[str, Any]] = {
    "organization": {
        "key_policy": {
            "max_lifetime_seconds": None,
            "require_expiry": "none",
            "revoke_unused_after_seconds": None,
        }
    },
    "api_key": {"revoke_when_idle_seconds": None, "unused_revocation_at": None},
}


def as_today(expected: Any) -> Any:
    """The expectations with `PLAN_GAINS` in the views that take a plan's permissions, and
    the `VIEW_GAINS` in every view."""
    if isinstance(expected, list):
        return [as_today(item) for item in expected]
    if not isinstance(expected, dict):
        return expected
    found = {name: as_today(value) for name, value in expected.items()}
    takes_plan = found.get("object") == "organization" or (
        found.get("object") == "api_key"
        and found.get("restricted") is False
        and found.get("type") == "secret"
    )
    if takes_plan:
        found["permissions"] = sorted({*found["permissions"], *PLAN_GAINS})
    if "created_by" in found or found.get("object") == "organization":  # a view, not an event
        found = {**VIEW_GAINS.get(found.get("object", ""), {}), **found}
    return found


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[KeyRegistry]:
    """The registry on a copy of the fixture store, opened as the service opens it."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    shutil.copyfile(FIXTURE / "events.sqlite3", data_dir / "events.sqlite3")
    opened = open_registry(Settings(data_dir=data_dir, key_pepper=b"p" * 32))
    yield opened
    opened.close()


def stored_events(registry: KeyRegistry) -> list[tuple[int, Any]]:
    """Every stored event, decoded, with its position in the notification log."""
    found: list[tuple[int, Any]] = []
    position = 0
    while page := registry.recorder.select_notifications(
        start=position, limit=500, inclusive_of_start=False
    ):
        for notification in page:
            found.append((notification.id, registry.mapper.to_domain_event(notification)))
            position = notification.id
    return found


def fixture_expiries_due(now: float) -> int:
    """How many of the fixture's expiring keys are past their expiry at `now` (Unix seconds)."""
    return sum(1 for at in EXPECTED["expiry_index"].values() if at <= now)


def test_the_fixture_was_made_before_the_renovation() -> None:
    assert EXPECTED["made_with_commit"] == "f0098f5"
    assert "domain.api_key:ApiKey.Revoked" in EXPECTED["topics"]


def test_every_aggregate_loads_at_the_version_its_events_give(registry: KeyRegistry) -> None:
    counts: dict[Any, int] = {}
    for _, event in stored_events(registry):
        counts[event.originator_id] = counts.get(event.originator_id, 0) + 1

    versions = {
        aggregate_id: registry.repository.get(aggregate_id).version for aggregate_id in counts
    }

    assert versions == counts
    assert len(counts) == len(KEYS) + len(ORGS)


def test_each_key_reads_as_it_did_its_view_status_and_version(registry: KeyRegistry) -> None:
    found = {}
    for label, expected in KEYS.items():
        key = registry.get_key(parse_key_id(expected["id"]))
        org = registry.get_organization(key.org_id)
        found[label] = {
            "id": format_key_id(key.id),
            "version": key.version,
            "view": plain(api_key_view(key, org, MOMENTS["after_expiries"])),
            "status_at": {name: str(key.status_at(at)) for name, at in MOMENTS.items()},
        }

    assert found == as_today({label: {n: e[n] for n in found[label]} for label, e in KEYS.items()})


def test_expiries_read_expired_and_a_person_using_the_workers_words_reads_revoked(
    registry: KeyRegistry,
) -> None:
    def read(label: str) -> tuple[str, str | None, str | None]:
        key = registry.get_key(parse_key_id(KEYS[label]["id"]))
        return str(key.status_at(MOMENTS["after_expiries"])), key.revoked_by, key.revocation_reason

    assert read("worker") == ("expired", "system", "expired: the grace period of its roll ended")
    assert read("temporary") == ("expired", "system", "expired: its expiry time was reached")
    assert read("old-reports") == ("revoked", "operator", "expired: its expiry time was reached")


def test_each_organization_reads_as_it_did(registry: KeyRegistry) -> None:
    for expected in ORGS.values():
        org = registry.get_organization(parse_org_id(expected["id"]))
        assert plain(organization_view(org)) == as_today(expected["view"])
        assert [format_key_id(k) for k in org.key_ids] == expected["key_ids"]


def test_every_stored_event_goes_on_the_wire_as_it_did(registry: KeyRegistry) -> None:
    messages = [plain(to_message(position, event)) for position, event in stored_events(registry)]

    assert messages == EXPECTED["messages"]


def test_key_histories_read_as_they_did(registry: KeyRegistry) -> None:
    history = History(registry, OPERATOR)

    for label, expected in KEYS.items():
        assert plain(history.key_history(parse_key_id(expected["id"]))) == expected["history"], (
            label
        )


def test_the_org_event_feeds_and_keys_as_of_read_as_they_did(registry: KeyRegistry) -> None:
    history = History(registry, OPERATOR)

    for label, expected in ORGS.items():
        org_id = parse_org_id(expected["id"])
        assert plain(history.org_events(org_id, limit=1000).events) == expected["events"], label
        as_of = {
            name: plain(history.keys_as_of(org_id, MOMENTS[name]))
            for name in expected["keys_as_of"]
        }
        assert as_of == as_today(expected["keys_as_of"]), label


def test_a_full_replay_folds_into_the_same_key_lookup(registry: KeyRegistry) -> None:
    lookup = KeyLookup()
    for position, event in stored_events(registry):
        lookup.apply(event, position)

    keys = {
        format_key_id(r.key_id): plain(
            {
                "org_id": format_org_id(r.org_id),
                "env": r.env,
                "type": r.type,
                "name": r.name,
                "hint": r.hint,
                "permissions": r.permissions,
                "allowed_origins": r.allowed_origins,
                "allowed_ips": r.allowed_ips,
                "expires_at": r.expires_at,
                "revoked": r.revoked,
                "expired": r.expired,
            }
        )
        for r in lookup.records()
    }
    orgs = {
        format_org_id(o.org_id): {"plan": o.plan, "rate_limit": o.rate_limit}
        for o in lookup.org_records()
    }
    assert lookup.position == EXPECTED["lookup"]["position"]
    assert keys == EXPECTED["lookup"]["keys"]
    assert orgs == EXPECTED["lookup"]["orgs"]
    assert sorted(map(format_key_id, lookup.public_key_ids)) == EXPECTED["lookup"]["public_key_ids"]
    assert all(lookup.get(r.key_hash) is r for r in lookup.records() if r.key_hash)


def test_a_full_replay_folds_into_the_same_expiry_index(registry: KeyRegistry) -> None:
    index = ExpiryIndex()
    for position, event in stored_events(registry):
        if type(event).__module__ == "domain.api_key":
            index.apply(event, position)

    assert {format_key_id(k): at for k, at in index.expiries.items()} == EXPECTED["expiry_index"]


def test_the_old_store_takes_new_events_and_an_expiry_reads_as_before(
    registry: KeyRegistry,
) -> None:
    backend = parse_key_id(KEYS["backend"]["id"])
    version = KEYS["backend"]["version"]

    registry.roll_key(backend, grace=timedelta(0), actor=OPERATOR)
    # The fixture's own expiring keys fall due as the calendar passes their expiry too.
    due_before = fixture_expiries_due(time.time())
    expired = ExpiryWorker(registry).run_once()
    assert 1 + due_before <= expired <= 1 + fixture_expiries_due(time.time())

    reopened = registry.get_key(backend)
    assert reopened.version == version + 2
    assert str(reopened.status_at(reopened.modified_on)) == "expired"
    last = History(registry, OPERATOR).key_history(backend)[-1]
    assert (last["type"], last["actor"], last["data"]) == (
        "api_key.revoked",
        "system",
        {"reason": "expired: the grace period of its roll ended"},
    )
