"""The new lifecycle events travel on the bus with their public fields only."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.key_events import decode, encode, to_message
from domain.actors import OPERATOR, SYSTEM
from domain.api_key import ApiKey
from domain.key_format import Environment, KeyType
from domain.key_states import ExposureSource
from domain.organization import LeakPolicy, Organization
from domain.plans import Plan

PEPPER = b"a-server-side-pepper-of-32-bytes"


def a_key() -> tuple[ApiKey, str]:
    org = Organization.register("Acme", Plan.PRO, OPERATOR)
    return ApiKey.issue(
        org,
        name="backend",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        pepper=PEPPER,
        actor=OPERATOR,
        now=datetime.now(UTC),
    )


def test_an_exposed_event_carries_source_and_detail_but_never_the_key_or_its_hash() -> None:
    key, secret = a_key()
    key.collect_events()
    key.flag_exposed(ExposureSource.LEAK_REPORT, "content: https://gist.example/1", SYSTEM)
    (event,) = key.collect_events()
    message = decode(encode(to_message(7, event)))
    assert (message.type, message.actor) == ("api_key.exposed", "system")
    assert message.data == {"source": "leak_report", "detail": "content: https://gist.example/1"}
    wire = encode(message)
    assert secret.encode() not in wire and key.key_hash.encode() not in wire


def test_an_allowlist_change_carries_the_networks() -> None:
    key, _ = a_key()
    key.collect_events()
    key.set_allowed_ips(["203.0.113.0/24"], OPERATOR)
    (event,) = key.collect_events()
    message = to_message(8, event)
    assert (message.type, message.data) == (
        "api_key.allowed_ips_changed",
        {"allowed_ips": ["203.0.113.0/24"]},
    )


def test_a_leak_policy_change_carries_the_policy() -> None:
    org = Organization.register("Acme", Plan.PRO, OPERATOR)
    org.collect_events()
    org.set_leak_policy(LeakPolicy.ROLL, OPERATOR)
    (event,) = org.collect_events()
    message = to_message(9, event)
    assert (message.type, message.data) == ("organization.leak_policy_set", {"policy": "roll"})
