"""How keys and organizations look to people and scripts: the contract's API key object."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from application.views import api_key_view, iso, organization_view
from domain.actors import OPERATOR
from domain.api_key import ApiKey
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Permission, Plan

PEPPER = b"a-server-side-pepper-of-32-bytes"
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def an_org(plan: Plan = Plan.PRO) -> Organization:
    return Organization.register("Acme", plan, OPERATOR)


def a_key(org: Organization, **options: object) -> tuple[ApiKey, str]:
    return ApiKey.issue(
        org,
        name="billing",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        pepper=PEPPER,
        actor=OPERATOR,
        now=NOW,
        **options,  # type: ignore[arg-type]
    )


def test_the_key_object_never_holds_the_secret_unless_given() -> None:
    org = an_org()
    key, secret = a_key(org)

    view = api_key_view(key, org, NOW)

    assert "key" not in view
    assert secret not in repr(view)
    assert secret[8:35] not in repr(view)
    assert view["hint"] == f"ak_live_…{secret[-4:]}"


def test_the_key_object_shows_the_secret_once_when_given() -> None:
    org = an_org()
    key, secret = a_key(org)

    assert api_key_view(key, org, NOW, secret=secret)["key"] == secret


def test_the_key_object_has_the_contract_fields() -> None:
    org = an_org()
    key, _ = a_key(org, permissions=frozenset({Permission.AFFILIATES_READ}))

    view = api_key_view(key, org, NOW)

    assert {
        "id",
        "object",
        "name",
        "env",
        "type",
        "hint",
        "status",
        "permissions",
        "created_at",
        "expires_at",
        "last_used_at",
    } <= set(view)
    assert view["id"] == format_key_id(key.id)
    assert view["organization"] == format_org_id(org.id)
    assert (view["object"], view["name"], view["env"], view["type"]) == (
        "api_key",
        "billing",
        "live",
        "secret",
    )
    assert view["status"] == "active"
    assert view["permissions"] == ["affiliates:read"]
    assert view["restricted"] is True
    assert view["created_at"].endswith("Z")


def test_a_rolled_key_object_links_both_ways_and_shows_its_expiry() -> None:
    org = an_org()
    old, _ = a_key(org)
    new, _ = old.roll(org, pepper=PEPPER, grace=timedelta(hours=1), actor=OPERATOR, now=NOW)

    old_view, new_view = api_key_view(old, org, NOW), api_key_view(new, org, NOW)

    assert old_view["status"] == "expiring"
    assert old_view["rolled_to"] == new_view["id"]
    assert new_view["rolled_from"] == old_view["id"]
    assert old_view["expires_at"] == "2030-06-01T13:00:00Z"


def test_the_key_object_shows_the_permissions_left_after_a_downgrade() -> None:
    org = an_org(Plan.PRO)
    key, _ = a_key(org)
    org.change_plan(Plan.FREE, OPERATOR)

    assert "audit:read" not in api_key_view(key, org, NOW)["permissions"]


def test_the_organization_object_shows_its_plan_and_limit() -> None:
    org = an_org(Plan.AGENCY)
    org.set_rate_limit(900, OPERATOR)

    view = organization_view(org)

    assert view["id"] == format_org_id(org.id)
    assert (view["object"], view["plan"], view["rate_limit_per_minute"]) == (
        "organization",
        "agency",
        900,
    )
    assert "audit:read" in view["permissions"]


def test_times_are_iso_8601_in_utc_with_a_z() -> None:
    assert iso(NOW) == "2030-06-01T12:00:00Z"
    assert iso(None) is None
