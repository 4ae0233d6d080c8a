"""Key lifetimes against a real server: the organization's policy, what it refuses, a roll
that revokes the old key once idle, and the public revocation of a leaked key (issue 16)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from domain.key_format import Environment, KeyType, generate_key
from icodrip_client import (
    ApiKey,
    AuthenticationError,
    Icodrip,
    PolicyViolationError,
    UnprocessableEntityError,
    async_revoke_leaked_keys,
    revoke_leaked_keys,
)
from real_server import RealServer, Stage


@dataclass(frozen=True)
class World:
    server: RealServer
    admin: str  # its organization's policy is changed freely by the tests
    org_id: str
    strict_admin: str  # another organization, whose policy refuses keys
    keys_admin: str  # a third, for rolls and public revocations (its policy left alone)


@pytest.fixture(scope="module")
def world(stage: Stage) -> World:
    acme, strict, keys = stage.org(), stage.org(), stage.org()
    admin = stage.key(acme, name="policy admin")
    strict_admin = stage.key(strict, name="strict admin")
    keys_admin = stage.key(keys, name="keys admin")
    return World(stage.start(), admin, f"org_{acme.id.hex}", strict_admin, keys_admin)


@pytest.fixture
def client(world: World) -> Iterator[Icodrip]:
    with world.server.client(world.admin) as client:
        yield client


@pytest.fixture
def keys(world: World) -> Iterator[Icodrip]:
    with world.server.client(world.keys_admin) as client:
        yield client


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


def test_the_policy_is_read_and_changed_rule_by_rule(client: Icodrip, world: World) -> None:
    try:
        start = client.organization.policy()
        assert start.org_id == world.org_id
        assert (start.max_lifetime, start.require_expiry, start.revoke_unused_after) == (
            None,
            "none",
            None,
        )
        assert start.unused_warning == timedelta(days=7)

        lifetime = client.organization.update_policy(max_lifetime=timedelta(days=90))
        assert lifetime.max_lifetime_seconds == 90 * 86400
        assert lifetime.max_lifetime == timedelta(days=90)
        assert (lifetime.require_expiry, lifetime.revoke_unused_after_seconds) == ("none", None)

        both = client.organization.update_policy(
            require_expiry="live", revoke_unused_after=timedelta(days=2)
        )
        assert both.max_lifetime == timedelta(days=90)  # left out: kept
        assert (both.require_expiry, both.revoke_unused_after) == ("live", timedelta(days=2))
        assert both.unused_warning == timedelta(days=1)  # half the rule when under 14 days
        assert client.organization.policy() == both
        assert both.raw["object"] == "key_policy"
    finally:
        off = client.organization.update_policy(
            max_lifetime=None, require_expiry=None, revoke_unused_after=None
        )

    assert (off.max_lifetime, off.require_expiry, off.revoke_unused_after) == (None, "none", None)


def test_a_rule_out_of_bounds_is_a_validation_error(client: Icodrip) -> None:
    with pytest.raises(UnprocessableEntityError) as caught:
        client.organization.update_policy(max_lifetime=timedelta(minutes=30))  # under an hour

    assert caught.value.code == "validation_error"
    assert not isinstance(caught.value, PolicyViolationError)


def test_durations_the_api_cannot_take_are_refused_before_sending(client: Icodrip) -> None:
    with pytest.raises(ValueError, match="whole number of seconds"):
        client.organization.update_policy(max_lifetime=timedelta(hours=1, milliseconds=5))
    with pytest.raises(ValueError, match="whole number of minutes"):
        client.api_keys.roll("key_" + "0" * 32, revoke_when_idle=timedelta(seconds=90))
    with pytest.raises(TypeError, match="timedelta"):
        client.organization.update_policy(max_lifetime=3600)  # type: ignore[arg-type]


def test_a_key_breaking_the_policy_is_refused_naming_the_rule(world: World) -> None:
    with world.server.client(world.strict_admin) as strict:
        old = strict.api_keys.create(name=unique("before the policy"))  # no expiry
        strict.organization.update_policy(require_expiry="all")

        with pytest.raises(PolicyViolationError) as unexpiring:
            strict.api_keys.create(name=unique("forever"))

        strict.organization.update_policy(require_expiry=None, max_lifetime=timedelta(days=1))
        in_a_week = datetime.now(UTC) + timedelta(days=7)
        with pytest.raises(PolicyViolationError) as too_long:
            strict.api_keys.create(name=unique("a week"), expires_at=in_a_week)
        with pytest.raises(PolicyViolationError) as rolled_forever:
            strict.api_keys.roll(old.id)  # the successor would keep the old key's no expiry

        in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        successor = strict.api_keys.roll(
            old.id, expires_at=in_an_hour, revoke_when_idle=timedelta(minutes=5)
        )

    error = unexpiring.value
    assert isinstance(error, UnprocessableEntityError)
    assert (error.status, error.code, error.rule) == (422, "policy_violation", "require_expiry")
    assert error.request_id is not None
    assert (too_long.value.rule, rolled_forever.value.rule) == ("max_lifetime", "max_lifetime")
    assert "expires_at" in too_long.value.message
    assert successor.rolled_from == old.id
    assert successor.expires_at == in_an_hour


def test_a_roll_that_revokes_the_old_key_once_idle_shows_on_it(keys: Icodrip) -> None:
    old = keys.api_keys.create(name=unique("idle"))
    assert (old.revoke_when_idle_seconds, old.unused_revocation_at) == (None, None)

    successor = keys.api_keys.roll(
        old.id, expire_in_seconds=3600, revoke_when_idle=timedelta(minutes=15)
    )

    rolled = keys.api_keys.get(old.id)
    assert (rolled.status, rolled.rolled_to) == ("expiring", successor.id)
    assert rolled.revoke_when_idle_seconds == 15 * 60
    assert successor.revoke_when_idle_seconds is None


def wait_until_revoked(client: Icodrip, key_id: str, within: float = 10.0) -> ApiKey:
    """The key once revoked: public revocation does its work after answering."""
    deadline = time.monotonic() + within
    while True:
        key = client.api_keys.get(key_id)
        if key.status == "revoked" or time.monotonic() > deadline:
            return key
        time.sleep(0.1)


def test_anyone_may_revoke_a_leaked_key_without_a_key(keys: Icodrip, world: World) -> None:
    leaked = keys.api_keys.create(name=unique("leaked"))
    assert leaked.key is not None
    sent: list[httpx.Request] = []
    strings = [
        leaked.key,
        "not a key",
        generate_key(KeyType.SECRET, Environment.LIVE),  # well-formed, unknown
        generate_key(KeyType.PUBLIC, Environment.LIVE),
    ]

    with httpx.Client(verify=world.server.tls, event_hooks={"request": [sent.append]}) as http:
        revoke_leaked_keys(strings, base_url=world.server.base_url, http_client=http)

    assert [request.url.path for request in sent] == ["/v1/public/revoke"]
    assert "authorization" not in sent[0].headers  # nothing of the caller's
    revoked = wait_until_revoked(keys, leaked.id)
    assert (revoked.status, revoked.revoked_by) == ("revoked", "system")
    assert revoked.revocation_reason == "leaked: revoked publicly"
    assert [flag.source for flag in revoked.exposure] == ["public_revocation"]
    with world.server.client(leaked.key) as itself, pytest.raises(AuthenticationError) as caught:
        itself.api_keys.current()
    assert caught.value.code == "api_key_revoked"


def test_one_string_is_one_key_and_an_empty_list_is_refused(keys: Icodrip, world: World) -> None:
    leaked = keys.api_keys.create(name=unique("one string"))
    assert leaked.key is not None

    revoke_leaked_keys(leaked.key, base_url=world.server.base_url, verify=world.server.tls)
    with pytest.raises(UnprocessableEntityError) as caught:
        revoke_leaked_keys([], base_url=world.server.base_url, verify=world.server.tls)

    assert caught.value.code == "validation_error"
    assert wait_until_revoked(keys, leaked.id).status == "revoked"


async def test_the_async_client_reads_the_policy_and_revokes_publicly(world: World) -> None:
    async with world.server.async_client(world.keys_admin) as client:
        policy = await client.organization.policy()
        same = await client.organization.update_policy()  # nothing given: nothing changes
        leaked = await client.api_keys.create(name=unique("async leaked"))
        assert leaked.key is not None

        await async_revoke_leaked_keys(
            [leaked.key], base_url=world.server.base_url, verify=world.server.tls
        )
        for _ in range(100):
            if (await client.api_keys.get(leaked.id)).status == "revoked":
                break
            await asyncio.sleep(0.1)

        assert (await client.api_keys.get(leaked.id)).status == "revoked"
    assert same == policy and policy.require_expiry == "none"
