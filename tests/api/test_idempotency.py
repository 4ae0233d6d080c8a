"""`Idempotency-Key`: a retried POST answers as the first did, and acts once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from adapters import idempotency_store
from adapters.settings import Settings
from bootstrap.api import api_process
from domain.ids import format_key_id
from support.api import Api, assert_error, bearer, serving
from support.windows import early_in_a_window


def _with_key(issued: Any, key: str) -> dict[str, str]:
    return {**bearer(issued), "Idempotency-Key": key}


async def _key_count(api: Api, issued: Any) -> int:
    listing = await api.client.get("/v1/api-keys", headers=bearer(issued))
    return len(listing.json()["data"])


async def test_a_retried_create_makes_one_key_and_replays_the_first_answer(api: Api) -> None:
    issued = await api.key(api.org())
    headers = _with_key(issued, str(uuid.uuid4()))
    first = await api.client.post("/v1/api-keys", json={"name": "ci"}, headers=headers)
    again = await api.client.post("/v1/api-keys", json={"name": "ci"}, headers=headers)

    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()  # the secret too: the caller may have lost it
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert await _key_count(api, issued) == 2


async def test_a_replay_is_counted_by_the_rate_limit_like_any_request(api: Api) -> None:
    issued = await api.key(api.org())
    headers = _with_key(issued, str(uuid.uuid4()))
    await early_in_a_window()
    first = await api.client.post("/v1/affiliates", json={"name": "Ann"}, headers=headers)
    again = await api.client.post("/v1/affiliates", json={"name": "Ann"}, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    remaining = int(first.headers["x-ratelimit-remaining"])
    assert int(again.headers["x-ratelimit-remaining"]) == remaining - 1


async def test_the_same_idempotency_key_with_another_body_is_refused(api: Api) -> None:
    issued = await api.key(api.org())
    headers = _with_key(issued, "retry-me")
    await api.client.post("/v1/api-keys", json={"name": "first"}, headers=headers)
    other = await api.client.post("/v1/api-keys", json={"name": "second"}, headers=headers)
    assert_error(other, 422, "idempotency_key_reused")
    assert await _key_count(api, issued) == 2


async def test_the_same_idempotency_key_on_another_route_is_refused(api: Api) -> None:
    issued = await api.key(api.org())
    headers = _with_key(issued, "one-key-one-request")
    await api.client.post("/v1/affiliates", json={"name": "x"}, headers=headers)
    other = await api.client.post("/v1/api-keys", json={"name": "x"}, headers=headers)
    assert_error(other, 422, "idempotency_key_reused")


async def test_idempotency_keys_are_scoped_to_the_api_key(api: Api) -> None:
    org = api.org()
    mine, theirs = await api.key(org), await api.key(org)
    body = {"name": "same"}
    a = await api.client.post("/v1/api-keys", json=body, headers=_with_key(mine, "shared"))
    b = await api.client.post("/v1/api-keys", json=body, headers=_with_key(theirs, "shared"))
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]
    assert "idempotent-replayed" not in b.headers


async def test_a_retried_roll_issues_one_successor(api: Api) -> None:
    org = api.org()
    admin, target = await api.key(org), await api.key(org)
    headers = _with_key(admin, str(uuid.uuid4()))
    path = f"/v1/api-keys/{format_key_id(target.key.id)}/roll"
    first = await api.client.post(path, json={"expire_in_seconds": 60}, headers=headers)
    again = await api.client.post(path, json={"expire_in_seconds": 60}, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"


@contextlib.asynccontextmanager
async def parked_create(
    api: Api, headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[asyncio.Task[httpx.Response]]:
    """A key creation that stops after storing its key, until the block ends; its answer is
    the task's."""
    mirror = api.process.services.mirror
    refresh, entered, release = mirror.refresh, asyncio.Event(), asyncio.Event()

    async def held_refresh() -> None:
        entered.set()
        await release.wait()
        await refresh()

    monkeypatch.setattr(mirror, "refresh", held_refresh)
    first = asyncio.create_task(
        api.client.post("/v1/api-keys", json={"name": "slow"}, headers=headers)
    )
    await asyncio.wait_for(entered.wait(), 10)
    try:
        yield first
    finally:
        release.set()
        await first
        monkeypatch.setattr(mirror, "refresh", refresh)


async def test_a_request_still_running_makes_its_duplicate_wait(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = await api.key(api.org())
    headers = _with_key(issued, str(uuid.uuid4()))
    async with parked_create(api, headers, monkeypatch) as first:
        duplicate = await api.client.post("/v1/api-keys", json={"name": "slow"}, headers=headers)
        assert_error(duplicate, 409, "idempotency_key_in_use")
        assert duplicate.headers["retry-after"] == "1"
    answered = first.result()
    assert answered.status_code == 201
    retried = await api.client.post("/v1/api-keys", json={"name": "slow"}, headers=headers)
    assert retried.json()["id"] == answered.json()["id"]


async def test_a_refused_request_is_not_kept(api: Api) -> None:
    issued = await api.key(api.org())
    headers = _with_key(issued, "fix-and-retry")
    refused = await api.client.post("/v1/api-keys", json={"name": ""}, headers=headers)
    assert_error(refused, 422, "validation_error")
    fixed = await api.client.post("/v1/api-keys", json={"name": "fixed"}, headers=headers)
    assert fixed.status_code == 201, fixed.text
    assert "idempotent-replayed" not in fixed.headers


@pytest.mark.parametrize(
    ("value", "why"),
    [("x" * 256, "at most 255"), ("   ", "must not be empty")],
)
async def test_a_malformed_idempotency_key_is_a_validation_error(
    api: Api, value: str, why: str
) -> None:
    issued = await api.key(api.org())
    response = await api.client.post(
        "/v1/affiliates", json={"name": "x"}, headers=_with_key(issued, value)
    )
    body = assert_error(response, 422, "validation_error")
    assert why in body["error"]["message"]


async def test_the_longest_idempotency_key_is_accepted(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.post(
        "/v1/affiliates", json={"name": "x"}, headers=_with_key(issued, "k" * 255)
    )
    assert response.status_code == 201


async def test_kept_answers_hold_no_secret_in_plain_text(api: Api, redis_url: str) -> None:
    issued = await api.key(api.org())
    idempotency_key = str(uuid.uuid4())
    created = await api.client.post(
        "/v1/api-keys", json={"name": "sealed"}, headers=_with_key(issued, idempotency_key)
    )
    secret = created.json()["key"]
    client = redis.Redis.from_url(redis_url)
    try:
        names = [
            n
            async for n in client.scan_iter(f"icodrip:idempotency:{format_key_id(issued.key.id)}:*")
        ]
        assert len(names) == 1
        held = await client.get(names[0])
        ttl = await client.ttl(names[0])
    finally:
        await client.aclose()
    assert held is not None and len(held) > 100
    assert secret.encode() not in held and b"sealed" not in held
    assert idempotency_key.encode() not in names[0]
    assert 23 * 3600 < ttl <= 24 * 3600


async def test_get_requests_ignore_the_header(api: Api) -> None:
    issued = await api.key(api.org())
    headers = _with_key(issued, "not-for-reads")
    first = await api.client.get("/v1/affiliates", headers=headers)
    again = await api.client.get("/v1/affiliates", headers=headers)
    assert "idempotent-replayed" not in again.headers
    assert first.status_code == again.status_code == 200


async def test_another_api_process_replays_the_answer(api: Api, api_settings: Settings) -> None:
    issued = await api.key(api.org())
    headers = _with_key(issued, str(uuid.uuid4()))
    first = await api.client.post("/v1/api-keys", json={"name": "one"}, headers=headers)
    async with serving(api_process(api_settings)) as other:
        again = await other.client.post("/v1/api-keys", json={"name": "one"}, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


async def test_on_the_embedded_default_api_processes_share_kept_answers(
    settings: Settings,
) -> None:
    embedded = dataclasses.replace(settings, redis_url=None, nats_url=None)
    async with serving(api_process(embedded)) as one, serving(api_process(embedded)) as two:
        issued = await one.key(one.org())
        await two.process.services.mirror.refresh()
        headers = _with_key(issued, str(uuid.uuid4()))
        first = await one.client.post("/v1/affiliates", json={"name": "a"}, headers=headers)
        again = await two.client.post("/v1/affiliates", json={"name": "a"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


async def test_a_long_request_keeps_its_claim(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idempotency_store, "CLAIM_SECONDS", 1)
    issued = await api.key(api.org())
    headers = _with_key(issued, str(uuid.uuid4()))
    async with parked_create(api, headers, monkeypatch) as first:
        await asyncio.sleep(1.6)  # past the claim's first life: it was renewed meanwhile
        duplicate = await api.client.post("/v1/api-keys", json={"name": "slow"}, headers=headers)
        assert_error(duplicate, 409, "idempotency_key_in_use")
    assert first.result().status_code == 201
    assert await _key_count(api, issued) == 2


async def test_a_500_after_the_change_is_replayed_not_run_again(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = await api.key(api.org())
    headers = _with_key(issued, str(uuid.uuid4()))

    def broken_view(affiliate: Any) -> Any:  # the affiliate is stored by then
        raise RuntimeError("a bug in the answer")

    monkeypatch.setattr("api.routes.affiliates.affiliate_view", broken_view)
    first = await api.client.post("/v1/affiliates", json={"name": "once"}, headers=headers)
    again = await api.client.post("/v1/affiliates", json={"name": "once"}, headers=headers)
    assert_error(first, 500, "internal_error")
    assert again.status_code == 500 and again.headers["idempotent-replayed"] == "true"
    monkeypatch.undo()
    listing = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert [a["name"] for a in listing.json()["data"]] == ["once"]


async def test_a_write_read_back_late_is_still_answered_and_kept(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = await api.key(api.org())
    headers = _with_key(issued, str(uuid.uuid4()))

    async def store_gone() -> None:
        raise OSError("the store went away after the write")

    monkeypatch.setattr(api.process.services.mirror, "refresh", store_gone)
    first = await api.client.post("/v1/api-keys", json={"name": "n"}, headers=headers)
    again = await api.client.post("/v1/api-keys", json={"name": "n"}, headers=headers)
    monkeypatch.undo()
    assert first.status_code == 201, first.text
    assert again.headers["idempotent-replayed"] == "true"
    assert await _key_count(api, issued) == 2


async def test_the_scheme_s_spelling_does_not_change_the_request(api: Api) -> None:
    issued = await api.key(api.org())
    key = str(uuid.uuid4())
    first = await api.client.post(
        "/v1/affiliates", json={"name": "a"}, headers=_with_key(issued, key)
    )
    spelled = {"Authorization": f"bearer   {issued.secret}", "Idempotency-Key": key}
    again = await api.client.post("/v1/affiliates", json={"name": "a"}, headers=spelled)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


@pytest.mark.parametrize("path", ["/v1/api-keys", "/v1/api-keys/{key_id}/roll"])
async def test_answers_that_show_a_secret_are_never_cached(api: Api, path: str) -> None:
    org = api.org()
    issued, target = await api.key(org), await api.key(org)
    url = path.format(key_id=format_key_id(target.key.id))
    response = await api.client.post(
        url, json={"name": "n"} if "roll" not in url else {}, headers=bearer(issued)
    )
    assert response.status_code in (200, 201), response.text
    assert response.headers["cache-control"] == "no-store"
