"""`client.api_keys` against a real server: who am I, a key's life, pages, and the refusals."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from domain.key_format import Environment, KeyType, generate_key
from domain.plans import Permission
from icodrip_client import (
    APIConnectionError,
    AuthenticationError,
    ConflictError,
    Icodrip,
    NotFoundError,
    PermissionDeniedError,
    UnprocessableEntityError,
)
from real_server import RealServer, Stage


@dataclass(frozen=True)
class World:
    server: RealServer
    admin: str
    org_id: str
    other_org: str
    reader: str


@pytest.fixture(scope="module")
def world(stage: Stage) -> World:
    acme, rival = stage.org(), stage.org()
    admin = stage.key(acme, name="admin")
    reader = stage.key(acme, permissions={Permission.AFFILIATES_READ}, name="reader")
    other = stage.key(rival, name="rival")
    return World(stage.start(), admin, f"org_{acme.id.hex}", other, reader)


@pytest.fixture
def client(world: World) -> Iterator[Icodrip]:
    with world.server.client(world.admin) as client:
        yield client


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


def test_current_is_the_key_the_client_calls_with(client: Icodrip, world: World) -> None:
    me = client.api_keys.current()

    assert me.name == "admin"
    assert me.organization == world.org_id
    assert (me.env, me.type, me.status) == ("live", "secret", "active")
    assert "api_keys:write" in me.permissions
    assert me.key is None  # the secret is shown once, at issue, never again
    assert me.raw["id"] == me.id


def test_a_created_key_works_and_is_then_rolled_and_revoked(client: Icodrip, world: World) -> None:
    new = client.api_keys.create(name=unique("lifecycle"), permissions=["affiliates:read"])
    assert new.key is not None and new.key.startswith("ak_live_")
    with world.server.client(new.key) as itself:
        assert itself.api_keys.current().id == new.id

    successor = client.api_keys.roll(new.id, expire_in_seconds=3600)
    assert successor.key is not None and successor.key != new.key
    assert successor.rolled_from == new.id
    assert client.api_keys.get(new.id).status == "expiring"

    revoked = client.api_keys.revoke(successor.id, reason="done with it")
    assert (revoked.status, revoked.revocation_reason) == ("revoked", "done with it")
    listed = {key.id: key.status for key in client.api_keys.list()}
    assert listed[new.id] == "expiring" and listed[successor.id] == "revoked"


def test_a_new_keys_secret_stays_out_of_its_repr(client: Icodrip) -> None:
    new = client.api_keys.create(name=unique("repr"))

    assert new.key is not None
    assert new.key not in repr(new)


def test_list_iterates_over_every_page(client: Icodrip) -> None:
    """Needs `GET /v1/api-keys` to page by `limit` and `cursor` (issue 15's server side)."""
    made = {client.api_keys.create(name=unique("paged")).id for _ in range(3)}

    pages = list(client.api_keys.list(limit=2).iter_pages())
    everything = [key.id for page in pages for key in page.data]

    assert len(pages) > 1 and all(len(page.data) <= 2 for page in pages)
    assert len(everything) == len(set(everything))  # no key twice
    assert made <= set(everything)
    assert [key.id for key in client.api_keys.list(limit=2)] == everything


def test_list_gives_the_page_at_a_cursor(client: Icodrip) -> None:
    """Needs `GET /v1/api-keys` to page by `limit` and `cursor` (issue 15's server side)."""
    for _ in range(3):
        client.api_keys.create(name=unique("cursor"))

    first = client.api_keys.list(limit=2)
    assert first.next_cursor is not None
    second = client.api_keys.list(limit=2, cursor=first.next_cursor)

    assert {k.id for k in first.data}.isdisjoint({k.id for k in second.data})
    assert len(second.data) >= 1


def test_rename_and_update_change_the_key(client: Icodrip) -> None:
    key = client.api_keys.create(name=unique("before"))

    renamed = client.api_keys.rename(key.id, "after")
    fenced = client.api_keys.update(key.id, allowed_ips=["203.0.113.7/24"])
    opened = client.api_keys.update(key.id, allowed_ips=[])

    assert renamed.name == "after"
    assert fenced.allowed_ips == ("203.0.113.0/24",)  # canonicalized by the API
    assert opened.allowed_ips == ()
    kinds = [event.type for event in client.api_keys.history(key.id)]
    assert kinds[0] == "api_key.created" and "api_key.renamed" in kinds


def test_another_organizations_key_is_not_found(client: Icodrip, world: World) -> None:
    with world.server.client(world.other_org) as rival:
        theirs = rival.api_keys.current().id

    with pytest.raises(NotFoundError) as caught:
        client.api_keys.get(theirs)

    assert (caught.value.status, caught.value.code) == (404, "not_found")


def test_a_key_without_the_permission_is_denied_with_its_code(world: World) -> None:
    with (
        world.server.client(world.reader) as reader,
        pytest.raises(PermissionDeniedError) as caught,
    ):
        reader.api_keys.list()

    assert caught.value.status == 403
    assert caught.value.code == "insufficient_permissions"
    assert "api_keys:read" in caught.value.message


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("not a key", "malformed_api_key"),
        (generate_key(KeyType.SECRET, Environment.LIVE), "invalid_api_key"),
    ],
    ids=["malformed", "unknown"],
)
def test_a_bad_key_is_an_authentication_error(world: World, key: str, code: str) -> None:
    with world.server.client(key) as stranger, pytest.raises(AuthenticationError) as caught:
        stranger.api_keys.current()

    assert (caught.value.status, caught.value.code) == (401, code)


def test_a_revoked_key_is_refused_with_its_code(client: Icodrip, world: World) -> None:
    doomed = client.api_keys.create(name=unique("doomed"))
    client.api_keys.revoke(doomed.id)
    assert doomed.key is not None

    with world.server.client(doomed.key) as gone, pytest.raises(AuthenticationError) as caught:
        gone.api_keys.current()

    assert caught.value.code == "api_key_revoked"


def test_revoking_a_revoked_key_is_a_conflict(client: Icodrip) -> None:
    key = client.api_keys.create(name=unique("twice"))
    client.api_keys.revoke(key.id)

    with pytest.raises(ConflictError) as caught:
        client.api_keys.revoke(key.id)

    assert (caught.value.status, caught.value.code) == (409, "api_key_revoked")


def test_an_invalid_field_is_a_validation_error_naming_it(client: Icodrip) -> None:
    with pytest.raises(UnprocessableEntityError) as caught:
        client.api_keys.create(name=unique("bad"), permissions=["no_such:permission"])

    assert (caught.value.status, caught.value.code) == (422, "validation_error")
    assert caught.value.body["error"]["code"] == "validation_error"


def test_an_error_names_the_request_the_server_logged(client: Icodrip) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.api_keys.get("key_" + "0" * 32)

    error = caught.value
    assert error.request_id is not None and len(error.request_id) == 32
    assert error.request_id == error.headers["x-request-id"]
    assert error.request_id in str(error)


def test_a_server_whose_certificate_is_not_trusted_is_not_retried(world: World) -> None:
    attempts: list[httpx.Request] = []

    with (
        httpx.Client(event_hooks={"request": [attempts.append]}) as http,  # the system's roots
        Icodrip(api_key=world.admin, base_url=world.server.base_url, http_client=http) as client,
        pytest.raises(APIConnectionError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.api_keys.current()

    assert len(attempts) == 1  # waiting does not make a certificate trustworthy
