"""The dashboard's view structs: built from the API's own key object, people named by email."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from api.dashboard.views import flash_of, history_entry, key_view
from application.key_management import ManagedKey
from domain.actors import OPERATOR
from domain.api_key import ApiKey
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Plan
from support.actors import user_of

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


class Use(NamedTuple):
    at: float
    addr: str | None


def test_a_key_view_names_its_creator_and_its_last_use() -> None:
    org = Organization.register("Acme", Plan.PRO, OPERATOR)
    user = user_of(org)
    key, _ = ApiKey.issue(
        org,
        name="Billing",
        env=Environment.TEST,
        key_type=KeyType.SECRET,
        pepper=b"a-server-side-pepper-of-32-bytes",
        actor=user,
        now=NOW,
    )
    used = Use(NOW.timestamp() - 60, "203.0.113.9")

    view = key_view(ManagedKey(key, org, used), NOW, {user.name: "dev@example.com"})

    assert view.id == f"key_{key.id.hex}" and view.env == "test" and view.status == "active"
    assert view.creator == "dev@example.com" and view.revoker == "—"
    assert view.created_at == key.created_on and view.expires_at is None
    assert view.last_used_at == datetime.fromtimestamp(used.at, UTC)
    assert view.last_used_addr == "203.0.113.9"
    assert view.permissions == tuple(sorted(p.value for p in key.effective_permissions(org)))
    unknown = key_view(ManagedKey(key, org), NOW, {})
    assert unknown.creator == f"user {user.name.removeprefix('user:')}"
    assert unknown.last_used_at is None and unknown.last_used_addr is None


def test_a_history_entry_keeps_every_change_and_names_the_actor() -> None:
    event = {
        "type": "api_key.renamed",
        "occurred_at": "2030-06-01T12:00:00Z",
        "actor": "key:key_" + "1" * 32,
        "changes": {"name": {"from": "Old", "to": "New"}, "status": {"from": None, "to": "x"}},
    }
    entry = history_entry(event, {})
    assert entry.actor == "API key key_" + "1" * 32 and entry.occurred_at == NOW
    assert [(c.name, c.to) for c in entry.changes] == [("name", "New"), ("status", "x")]


def test_a_flash_message_is_read_only_when_it_is_one() -> None:
    assert flash_of({"message": "Done.", "kind": "success"}) is not None
    assert flash_of(None) is None and flash_of({"nonsense": 1}) is None and flash_of("x") is None
