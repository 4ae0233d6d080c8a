"""Organization: its name, its plan, the permissions and rate limit its keys inherit."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.actors import OPERATOR, UserActor
from domain.errors import PlanDoesNotAllow, ValidationError
from domain.organization import Organization
from domain.plans import (
    DEFAULT_RATE_LIMIT_PER_MINUTE,
    MAX_CUSTOM_RATE_LIMIT_PER_MINUTE,
    PLAN_PERMISSIONS,
    Permission,
    Plan,
)
from domain.roles import Role

FREE_PERMISSIONS = {
    Permission.AFFILIATES_READ,
    Permission.AFFILIATES_WRITE,
    Permission.API_KEYS_READ,
    Permission.API_KEYS_WRITE,
    Permission.EVENTS_READ,
    Permission.EVENTS_WRITE,
    Permission.USAGE_READ,
    Permission.WEBHOOKS_READ,
    Permission.WEBHOOKS_WRITE,
}


def test_an_organization_is_registered_with_a_name_a_plan_and_no_keys() -> None:
    org = Organization.register("Acme Affiliates", Plan.PRO, OPERATOR)

    assert org.name == "Acme Affiliates"
    assert org.plan is Plan.PRO
    assert org.key_ids == []
    assert org.registered_by == OPERATOR.name
    assert org.version == 1


def test_the_name_is_trimmed() -> None:
    org = Organization.register("  Acme \t", Plan.FREE, OPERATOR)

    assert org.name == "Acme"


@pytest.mark.parametrize("name", ["", "   ", "\t\n", "x" * 101, "  " + "x" * 101 + "  "])
def test_the_name_must_be_1_to_100_characters(name: str) -> None:
    with pytest.raises(ValidationError, match="1 to 100"):
        Organization.register(name, Plan.FREE, OPERATOR)


def test_a_name_of_100_characters_is_accepted() -> None:
    assert Organization.register("x" * 100, Plan.FREE, OPERATOR).name == "x" * 100


@pytest.mark.parametrize("name", ["Acme\nEvil", "Acme\x00", "Ac\x1bme", "Acme\u200b"])
def test_the_name_must_be_printable(name: str) -> None:
    with pytest.raises(ValidationError, match="printable"):
        Organization.register(name, Plan.FREE, OPERATOR)


def test_the_plan_may_be_given_as_its_name() -> None:
    org = Organization.register("Acme", "agency", OPERATOR)  # type: ignore[arg-type]

    assert org.plan is Plan.AGENCY


@pytest.mark.parametrize(
    ("plan", "permissions"),
    [
        (Plan.FREE, FREE_PERMISSIONS),
        (Plan.PRO, FREE_PERMISSIONS | {Permission.AUDIT_READ}),
        (Plan.AGENCY, FREE_PERMISSIONS | {Permission.AUDIT_READ}),
    ],
)
def test_the_plan_decides_the_permissions(plan: Plan, permissions: set[Permission]) -> None:
    org = Organization.register("Acme", plan, OPERATOR)

    assert org.permissions == permissions == PLAN_PERMISSIONS[plan]


@pytest.mark.parametrize("plan", list(Plan))
def test_every_plan_starts_at_the_default_rate_limit(plan: Plan) -> None:
    org = Organization.register("Acme", plan, OPERATOR)

    assert org.rate_limit_per_minute == DEFAULT_RATE_LIMIT_PER_MINUTE == 100


def test_an_agency_takes_a_custom_rate_limit() -> None:
    org = Organization.register("Acme", Plan.AGENCY, OPERATOR)

    org.set_rate_limit(5000, OPERATOR)

    assert org.custom_rate_limit == 5000
    assert org.rate_limit_per_minute == 5000


@pytest.mark.parametrize("plan", [Plan.FREE, Plan.PRO])
def test_only_the_agency_plan_takes_a_custom_rate_limit(plan: Plan) -> None:
    org = Organization.register("Acme", plan, OPERATOR)

    with pytest.raises(PlanDoesNotAllow, match="agency") as caught:
        org.set_rate_limit(5000, OPERATOR)

    assert caught.value.code == "plan_does_not_allow"
    assert org.custom_rate_limit is None
    assert org.rate_limit_per_minute == DEFAULT_RATE_LIMIT_PER_MINUTE


@pytest.mark.parametrize("limit", [0, -1, MAX_CUSTOM_RATE_LIMIT_PER_MINUTE + 1])
def test_a_custom_rate_limit_must_be_within_bounds(limit: int) -> None:
    org = Organization.register("Acme", Plan.AGENCY, OPERATOR)

    with pytest.raises(ValidationError, match="rate limit"):
        org.set_rate_limit(limit, OPERATOR)

    assert org.custom_rate_limit is None


@pytest.mark.parametrize("limit", [1, MAX_CUSTOM_RATE_LIMIT_PER_MINUTE])
def test_the_rate_limit_bounds_are_inclusive(limit: int) -> None:
    org = Organization.register("Acme", Plan.AGENCY, OPERATOR)

    org.set_rate_limit(limit, OPERATOR)

    assert org.rate_limit_per_minute == limit


@pytest.mark.parametrize("plan", [Plan.FREE, Plan.PRO])
def test_leaving_agency_clears_the_custom_rate_limit(plan: Plan) -> None:
    org = Organization.register("Acme", Plan.AGENCY, OPERATOR)
    org.set_rate_limit(5000, OPERATOR)

    org.change_plan(plan, OPERATOR)

    assert org.plan is plan
    assert org.custom_rate_limit is None
    assert org.rate_limit_per_minute == DEFAULT_RATE_LIMIT_PER_MINUTE


def test_coming_back_to_agency_does_not_restore_an_old_custom_limit() -> None:
    org = Organization.register("Acme", Plan.AGENCY, OPERATOR)
    org.set_rate_limit(5000, OPERATOR)
    org.change_plan(Plan.PRO, OPERATOR)

    org.change_plan(Plan.AGENCY, OPERATOR)

    assert org.rate_limit_per_minute == DEFAULT_RATE_LIMIT_PER_MINUTE


def test_clearing_the_rate_limit_goes_back_to_the_default() -> None:
    org = Organization.register("Acme", Plan.AGENCY, OPERATOR)
    org.set_rate_limit(5000, OPERATOR)

    org.clear_rate_limit(OPERATOR)

    assert org.plan is Plan.AGENCY
    assert org.rate_limit_per_minute == DEFAULT_RATE_LIMIT_PER_MINUTE


def test_clearing_an_unset_rate_limit_records_nothing() -> None:
    org = Organization.register("Acme", Plan.AGENCY, OPERATOR)
    org.collect_events()

    org.clear_rate_limit(OPERATOR)

    assert org.collect_events() == []


def test_changing_to_the_current_plan_records_nothing() -> None:
    org = Organization.register("Acme", Plan.PRO, OPERATOR)
    org.collect_events()

    org.change_plan(Plan.PRO, OPERATOR)

    assert org.collect_events() == []


def test_a_plan_change_records_the_previous_plan() -> None:
    org = Organization.register("Acme", Plan.FREE, OPERATOR)
    org.collect_events()

    org.change_plan(Plan.PRO, OPERATOR)

    (changed,) = org.collect_events()
    assert (changed.plan, changed.previous) == (Plan.PRO, Plan.FREE)  # type: ignore[attr-defined]


def test_a_downgrade_takes_permissions_away() -> None:
    org = Organization.register("Acme", Plan.PRO, OPERATOR)

    org.change_plan(Plan.FREE, OPERATOR)

    assert Permission.AUDIT_READ not in org.permissions


def test_keys_are_recorded_in_the_order_they_were_added() -> None:
    org = Organization.register("Acme", Plan.FREE, OPERATOR)
    first, second = uuid4(), uuid4()

    org.add_key(first, OPERATOR)
    org.add_key(second, OPERATOR)

    assert org.key_ids == [first, second]


def test_every_event_carries_its_actor_and_a_timestamp() -> None:
    admin = UserActor(uuid4(), uuid4(), Role.ADMIN, PLAN_PERMISSIONS[Plan.PRO])
    org = Organization.register("Acme", Plan.FREE, admin)
    org.change_plan(Plan.AGENCY, admin)
    org.set_rate_limit(500, admin)
    org.clear_rate_limit(admin)
    org.set_rate_limit(600, admin)
    org.change_plan(Plan.PRO, admin)
    org.add_key(uuid4(), admin)

    events = org.collect_events()

    assert [type(e).__name__ for e in events] == [
        "Registered",
        "PlanChanged",
        "RateLimitSet",
        "RateLimitCleared",
        "RateLimitSet",
        "PlanChanged",
        "KeyAdded",
    ]
    for e in events:
        assert e.actor == admin.name  # type: ignore[attr-defined]
        assert e.timestamp.tzinfo is not None
        assert e.originator_id == org.id
    timestamps = [e.timestamp for e in events]
    assert timestamps == sorted(timestamps)


def test_an_organization_replays_from_its_events_to_the_same_state() -> None:
    org = Organization.register("Acme", Plan.AGENCY, OPERATOR)
    org.set_rate_limit(700, OPERATOR)
    org.add_key(uuid4(), OPERATOR)
    events = org.collect_events()

    copy = None
    for e in events:
        copy = e.mutate(copy)

    assert copy is not None
    assert (copy.name, copy.plan, copy.rate_limit_per_minute, copy.key_ids) == (
        org.name,
        org.plan,
        org.rate_limit_per_minute,
        org.key_ids,
    )
