"""A webhook endpoint's life: added with a secret nobody stores, changed, rotated, disabled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.actors import OPERATOR, SYSTEM
from domain.errors import NotFound, ValidationError
from domain.key_format import Environment
from domain.webhook import (
    SECRET_OVERLAP,
    WebhookEndpoint,
    WebhookEventType,
    parse_event_types,
)

PEPPER = b"a pepper of sixteen bytes or more"
NOW = datetime(2030, 1, 1, tzinfo=UTC)
REVOKED = WebhookEventType.API_KEY_REVOKED


def an_endpoint(**overrides: object) -> WebhookEndpoint:
    fields: dict[str, object] = {
        "env": Environment.LIVE,
        "url": "https://hooks.example.com/in",
        "events": (REVOKED,),
        "description": "billing",
        "actor": OPERATOR,
    }
    fields.update(overrides)
    return WebhookEndpoint.add(uuid4(), **fields)  # type: ignore[arg-type]


def test_an_endpoint_signs_with_a_secret_its_events_do_not_hold() -> None:
    endpoint = an_endpoint()
    (secret,) = endpoint.secrets(PEPPER, NOW)
    assert secret.startswith("whsec_")
    for event in endpoint.collect_events():
        assert secret not in repr(event.__dict__)


def test_two_endpoints_never_share_a_secret() -> None:
    assert an_endpoint().secrets(PEPPER, NOW) != an_endpoint().secrets(PEPPER, NOW)


def test_a_rotated_secret_keeps_signing_beside_the_new_one_for_a_day() -> None:
    endpoint = an_endpoint()
    (old,) = endpoint.secrets(PEPPER, NOW)
    endpoint.rotate_secret(OPERATOR, NOW)
    new, previous = endpoint.secrets(PEPPER, NOW + timedelta(hours=23))
    assert previous == old and new != old
    assert endpoint.secrets(PEPPER, NOW + SECRET_OVERLAP) == [new]


def test_it_wants_only_the_events_it_chose_while_enabled() -> None:
    endpoint = an_endpoint()
    assert endpoint.wants(REVOKED)
    assert not endpoint.wants(WebhookEventType.API_KEY_CREATED)
    endpoint.disable(SYSTEM, "failing for 5 days")
    assert not endpoint.wants(REVOKED)
    assert endpoint.disabled_reason == "failing for 5 days"
    assert endpoint.enable(OPERATOR) and endpoint.wants(REVOKED)


def test_a_change_records_only_what_differs() -> None:
    endpoint = an_endpoint()
    endpoint.collect_events()
    assert not endpoint.change(OPERATOR, url=endpoint.url, description="billing")
    assert endpoint.change(OPERATOR, events=(REVOKED, WebhookEventType.API_KEY_CREATED))
    (changed,) = endpoint.collect_events()
    assert isinstance(changed, WebhookEndpoint.Changed)
    assert changed.url is None and changed.description is None
    assert sorted(changed.events or []) == ["api_key.created", "api_key.revoked"]


def test_a_deleted_endpoint_takes_no_more_commands() -> None:
    endpoint = an_endpoint()
    endpoint.delete(OPERATOR)
    assert not endpoint.wants(REVOKED)
    with pytest.raises(NotFound):
        endpoint.request_test(OPERATOR)
    with pytest.raises(NotFound):
        endpoint.rotate_secret(OPERATOR, NOW)


def test_event_types_must_be_known_and_at_least_one() -> None:
    assert parse_event_types(["api_key.revoked", "api_key.revoked"]) == (REVOKED,)
    with pytest.raises(ValidationError, match=r"unknown webhook event 'api_key\.sold'"):
        parse_event_types(["api_key.sold"])
    with pytest.raises(ValidationError, match="at least one"):
        parse_event_types([])


def test_a_description_is_bounded() -> None:
    with pytest.raises(ValidationError, match="at most 500"):
        an_endpoint(description="x" * 501)


def test_a_second_rotation_within_a_day_keeps_the_first_secret_signing_too() -> None:
    endpoint = an_endpoint()
    (first,) = endpoint.secrets(PEPPER, NOW)
    endpoint.rotate_secret(OPERATOR, NOW)
    (second, _) = endpoint.secrets(PEPPER, NOW)
    endpoint.rotate_secret(OPERATOR, NOW + timedelta(hours=1))
    third, *older = endpoint.secrets(PEPPER, NOW + timedelta(hours=2))
    assert older == [second, first]
    assert endpoint.secrets(PEPPER, NOW + timedelta(hours=24, minutes=30)) == [third, second]
    assert endpoint.previous_until == NOW + timedelta(hours=25)
