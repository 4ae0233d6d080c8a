"""`POST /v1/public/revoke`: whoever holds a leaked key kills it; the answer tells nothing."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from structlog.testing import capture_logs

from api.routes.public_revocation import MAX_KEYS, PUBLIC_REVOCATIONS_PER_MINUTE
from application.history import History
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType, generate_key
from domain.organization import LeakPolicy
from support.api import Api, assert_error, bearer

PATH = "/v1/public/revoke"
#: Headers that differ between any two answers, whatever they answer.
PER_RESPONSE = {"x-request-id", "date", "x-ratelimit-reset", "ratelimit"}


def random_address() -> str:
    """A client network of its own (a /64 of the documentation range), so no other test
    shares its limit."""
    return f"2001:db8:{random.randrange(1, 0xFFFF):x}:{random.randrange(1, 0xFFFF):x}::1"


@asynccontextmanager
async def client_at(api: Api, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api.process.app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
        yield client


async def revoke(api: Api, *keys: str, address: str | None = None) -> httpx.Response:
    async with client_at(api, address or random_address()) as client:
        return await client.post(PATH, json={"keys": list(keys)})


def history(api: Api, key_id: Any) -> list[dict[str, Any]]:
    return History(api.registry, OPERATOR).key_history(key_id)  # type: ignore[no-any-return]


def stable_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in PER_RESPONSE}


async def test_a_publicly_revoked_key_is_revoked_at_once(api: Api) -> None:
    issued = await api.key(api.org())
    response = await revoke(api, issued.secret)
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "accepted"}
    after = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert_error(after, 401, "api_key_revoked")


async def test_it_is_flagged_exposed_and_audited_without_the_reporters_address(
    api: Api,
) -> None:
    issued = await api.key(api.org())
    address = random_address()
    await revoke(api, issued.secret, address=address)
    events = history(api, issued.key.id)
    exposed = [e for e in events if e["type"] == "api_key.exposed"]
    assert [(e["actor"], e["data"]["source"]) for e in exposed] == [("system", "public_revocation")]
    assert exposed[0]["data"]["detail"] == "public revocation"
    assert address not in repr(events)
    # The events the webhook worker announces (api_key.exposed, api_key.revoked).
    assert [e["type"] for e in events][-2:] == ["api_key.exposed", "api_key.revoked"]
    key = api.registry.get_key(issued.key.id)
    assert (key.revoked_by, key.revocation_reason) == ("system", "leaked: revoked publicly")
    assert issued.secret not in repr(events)


async def test_an_org_with_the_roll_policy_gets_the_key_rolled(api: Api) -> None:
    org = api.org()
    api.registry.set_leak_policy(org.id, LeakPolicy.ROLL, OPERATOR)
    issued = await api.key(org)
    response = await revoke(api, issued.secret)
    assert response.status_code == 202, response.text
    key = api.registry.get_key(issued.key.id)
    assert key.successor_id is not None
    assert not key.is_revoked
    assert key.exposed_at is not None


async def test_strings_that_are_not_our_keys_change_nothing(api: Api) -> None:
    issued = await api.key(api.org())
    last = issued.secret[-1]
    wrong_checksum = issued.secret[:-1] + ("A" if last != "A" else "B")
    unknown = generate_key(KeyType.SECRET, Environment.LIVE)
    response = await revoke(api, wrong_checksum, unknown, "not-a-key", "", " ")
    assert response.status_code == 202, response.text
    assert not api.registry.get_key(issued.key.id).is_revoked
    assert not [e for e in history(api, issued.key.id) if e["type"] == "api_key.exposed"]
    still = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert still.status_code == 200, still.text


async def test_a_real_key_and_a_random_one_get_the_same_answer(api: Api) -> None:
    issued = await api.key(api.org())
    real = await revoke(api, issued.secret)
    random_key = await revoke(api, generate_key(KeyType.SECRET, Environment.LIVE))
    garbage = await revoke(api, "ak_live_whatever")
    assert api.registry.get_key(issued.key.id).is_revoked  # the real one did something
    for other in (random_key, garbage):
        assert other.status_code == real.status_code == 202
        assert other.content == real.content
        assert stable_headers(other) == stable_headers(real)
    policy = f'"per-address";q={PUBLIC_REVOCATIONS_PER_MINUTE};w=60'
    assert real.headers["ratelimit-policy"] == policy


async def test_an_already_revoked_key_gets_the_same_answer_and_nothing_more(api: Api) -> None:
    issued = await api.key(api.org())
    first = await revoke(api, issued.secret)
    before = history(api, issued.key.id)
    again = await revoke(api, issued.secret)
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert stable_headers(again) == stable_headers(first)
    assert history(api, issued.key.id) == before


async def test_a_public_key_is_not_revoked(api: Api) -> None:
    issued = await api.key(api.org(), key_type=KeyType.PUBLIC)
    response = await revoke(api, issued.secret)
    assert response.status_code == 202, response.text
    assert not api.registry.get_key(issued.key.id).is_revoked
    assert not [e for e in history(api, issued.key.id) if e["type"] == "api_key.exposed"]


async def test_more_than_the_maximum_of_keys_is_422(api: Api) -> None:
    issued = await api.key(api.org())
    keys = [issued.secret] + [f"x{i}" for i in range(MAX_KEYS)]
    response = await revoke(api, *keys)
    assert_error(response, 422, "validation_error")
    assert not api.registry.get_key(issued.key.id).is_revoked
    assert (await revoke(api, *keys[:MAX_KEYS])).status_code == 202


async def test_no_keys_a_too_long_string_or_another_shape_is_422(api: Api) -> None:
    async with client_at(api, random_address()) as client:
        for body in ({"keys": []}, {"keys": ["x" * 201]}, {"credentials": ["x"]}, ["x"]):
            response = await client.post(PATH, json=body)
            assert_error(response, 422, "validation_error")
            assert "x" * 201 not in response.text


async def test_calls_are_limited_per_client_address(api: Api) -> None:
    address = random_address()
    async with client_at(api, address) as client:
        for _ in range(PUBLIC_REVOCATIONS_PER_MINUTE):
            allowed = await client.post(PATH, json={"keys": ["x"]})
            assert allowed.status_code == 202, allowed.text
        issued = await api.key(api.org())
        refused = await client.post(PATH, json={"keys": [issued.secret]})
    assert_error(refused, 429, "rate_limit_exceeded")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit"] == str(PUBLIC_REVOCATIONS_PER_MINUTE)
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-policy"].startswith('"per-address"')
    assert not api.registry.get_key(issued.key.id).is_revoked
    elsewhere = await revoke(api, issued.secret)
    assert elsewhere.status_code == 202, elsewhere.text


async def test_a_key_sent_as_bearer_is_neither_needed_nor_used(api: Api) -> None:
    mine = await api.key(api.org())
    async with client_at(api, random_address()) as client:
        response = await client.post(PATH, json={"keys": ["x"]}, headers=bearer("ak_live_x"))
    assert response.status_code == 202, response.text
    assert not api.registry.get_key(mine.key.id).is_revoked


async def test_the_log_names_the_key_by_id_and_hint_never_the_key(api: Api) -> None:
    issued = await api.key(api.org())
    with capture_logs() as logs:
        await revoke(api, issued.secret)
    (entry,) = [e for e in logs if e["event"] == "leak.revoked_publicly"]
    assert entry["key_hint"] == issued.key.hint
    assert entry["action"] == "revoked"
    assert issued.secret not in repr(logs)


async def test_the_openapi_document_describes_the_route(api: Api) -> None:
    schema = (await api.client.get("/schema/openapi.json")).json()
    operation = schema["paths"][PATH]["post"]
    assert "security" not in operation
    assert {"202", "422", "429", "503"} <= operation["responses"].keys()
    assert not {"401", "403"} & operation["responses"].keys()
    answer = operation["responses"]["202"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/RevocationAccepted")
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    keys = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]["properties"]["keys"]
    assert (keys["minItems"], keys["maxItems"]) == (1, MAX_KEYS)


async def test_one_network_shares_one_limit_whatever_its_addresses(api: Api) -> None:
    network = random_address().removesuffix("::1")
    for host in range(PUBLIC_REVOCATIONS_PER_MINUTE):
        answer = await revoke(api, "ak_live_nothing", address=f"{network}::{host + 1:x}")
        assert answer.status_code == 202, answer.text
    refused = await revoke(api, "ak_live_nothing", address=f"{network}:ffff::9")
    assert_error(refused, 429, "rate_limit_exceeded")
