"""An expiry is an event of its own, `ApiKey.Expired`; an old-style one (a `Revoked`) upcasts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, StoredEvent, UUIDAsHex
from eventsourcing.utils import get_topic

from domain.actors import OPERATOR, SYSTEM
from domain.api_key import ApiKey
from domain.errors import ValidationError
from domain.key_format import Environment, KeyType
from domain.key_states import EXPIRED_AFTER_GRACE, EXPIRED_AT_EXPIRY, ExpiryCause, KeyStatus
from domain.organization import Organization
from domain.plans import Plan

PEPPER = b"a-server-side-pepper-of-32-bytes"
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def issue(org: Organization | None = None, **options: Any) -> ApiKey:
    key, _ = ApiKey.issue(
        org or Organization.register("Acme", Plan.PRO, OPERATOR),
        name="billing",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        pepper=PEPPER,
        actor=OPERATOR,
        now=NOW,
        **options,
    )
    return key


def expired_at_expiry() -> tuple[ApiKey, ApiKey.Expired]:
    key = issue(expires_at=NOW + HOUR)
    key.collect_events()
    assert key.expire(NOW + HOUR, SYSTEM)
    (event,) = key.collect_events()
    assert isinstance(event, ApiKey.Expired)
    return key, event


def replayed(events: list[Any]) -> ApiKey:
    key: Any = None
    for event in events:
        key = event.mutate(key)
    assert isinstance(key, ApiKey)
    return key


def mapper() -> Mapper[Any]:
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    return Mapper(transcoder=transcoder)


def old_style_expiry(key: ApiKey, reason: str, actor: str = "system") -> ApiKey.Revoked:
    """An expiry as the code before `ApiKey.Expired` recorded it."""
    return ApiKey.Revoked(
        originator_id=key.id,
        originator_version=key.version + 1,
        timestamp=NOW + HOUR,
        reason=reason,
        org_id=key.org_id,
        actor=actor,
    )


# -- the Expired event -------------------------------------------------------------------------


def test_an_expiry_is_an_expired_event_not_a_revocation() -> None:
    _, event = expired_at_expiry()
    assert not isinstance(event, ApiKey.Revoked)


def test_a_key_expiring_at_its_expiry_time_says_so_in_its_cause() -> None:
    _, event = expired_at_expiry()
    assert (event.cause, event.actor) == (ExpiryCause.AT_EXPIRY, "system")


def test_a_rolled_key_expiring_at_the_end_of_its_grace_says_so_in_its_cause() -> None:
    org = Organization.register("Acme", Plan.PRO, OPERATOR)
    key = issue(org)
    key.roll(org, pepper=PEPPER, grace=HOUR, actor=OPERATOR, now=NOW)
    key.collect_events()
    key.expire(NOW + HOUR, SYSTEM)
    (event,) = key.collect_events()
    assert event.cause is ExpiryCause.AFTER_GRACE


def test_an_expired_event_states_its_cause_in_the_words_the_wire_has_always_carried() -> None:
    _, event = expired_at_expiry()
    assert event.reason == EXPIRED_AT_EXPIRY


def test_an_expired_key_reads_as_the_systems_revocation_in_the_expirys_words() -> None:
    key, event = expired_at_expiry()
    assert (key.revoked_at, key.revoked_by, key.revocation_reason) == (
        event.timestamp,
        "system",
        EXPIRED_AT_EXPIRY,
    )


def test_an_expired_key_replays_from_its_events_as_expired() -> None:
    key = issue(expires_at=NOW + HOUR)
    key.expire(NOW + HOUR, SYSTEM)
    again = replayed(key.collect_events())
    assert (again.status_at(NOW), again.expiry_cause) == (KeyStatus.EXPIRED, ExpiryCause.AT_EXPIRY)


def test_the_system_cannot_revoke_a_key_in_an_expirys_words() -> None:
    with pytest.raises(ValidationError, match="expire"):
        issue().revoke(SYSTEM, EXPIRED_AT_EXPIRY)


def test_a_person_revoking_in_an_expirys_words_revokes() -> None:
    key = issue()
    key.revoke(OPERATOR, EXPIRED_AT_EXPIRY)
    assert key.status_at(NOW) == KeyStatus.REVOKED


# -- expiries stored before the Expired event ---------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "reason", "is_expiry"),
    [
        ("system", EXPIRED_AT_EXPIRY, True),
        ("system", EXPIRED_AFTER_GRACE, True),
        ("system", "leaked: reported at https://example.com", False),
        ("operator", EXPIRED_AT_EXPIRY, False),
    ],
)
def test_an_old_style_expiry_is_the_systems_revocation_in_an_expirys_words(
    actor: str, reason: str, is_expiry: bool
) -> None:
    assert old_style_expiry(issue(), reason, actor).is_old_style_expiry is is_expiry


def test_upcasting_an_expired_event_of_version_1_turns_its_reason_into_its_cause() -> None:
    state: dict[str, Any] = {"reason": EXPIRED_AFTER_GRACE, "org_id": "o", "actor": "system"}
    ApiKey.Expired.upcast_v1_v2(state)
    assert state == {"cause": "after_grace", "org_id": "o", "actor": "system"}


def test_an_old_style_expiry_read_as_an_expired_of_version_1_replays_expired() -> None:
    key = issue()
    created = key.collect_events()
    stored = mapper().to_stored_event(old_style_expiry(key, EXPIRED_AFTER_GRACE))
    assert stored.topic == "domain.api_key:ApiKey.Revoked"
    # What the key store's mapper does with it (`application.stored_events`).
    as_expiry = StoredEvent(
        stored.originator_id, stored.originator_version, get_topic(ApiKey.Expired), stored.state
    )

    event = mapper().to_domain_event(as_expiry)

    assert isinstance(event, ApiKey.Expired) and event.cause == ExpiryCause.AFTER_GRACE
    again = replayed([*created, event])
    assert (again.status_at(NOW), again.revocation_reason, again.revoked_at) == (
        KeyStatus.EXPIRED,
        EXPIRED_AFTER_GRACE,
        NOW + HOUR,
    )
