"""`GET /v1/api-keys/current`: a key asks about itself and is answered from memory, never stale."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from domain.actors import OPERATOR
from domain.plans import Plan
from support.api import Api, bearer


async def test_current_answers_from_memory_once_the_key_has_asked(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = await api.key(api.org(Plan.PRO))
    first = await api.client.get("/v1/api-keys/current", headers=bearer(issued))
    assert first.status_code == 200

    def no_store(*_: Any, **__: Any) -> Any:
        raise AssertionError("the store was read on the request path")

    monkeypatch.setattr(api.registry, "get_key", no_store)
    monkeypatch.setattr(api.registry, "get_organization", no_store)
    again = await api.client.get("/v1/api-keys/current", headers=bearer(issued))
    assert again.status_code == 200
    assert again.json() == first.json()


async def test_current_shows_a_rename_made_through_the_api_at_once(api: Api) -> None:
    org = api.org(Plan.PRO)
    admin, issued = await api.key(org), await api.key(org)
    assert (await api.client.get("/v1/api-keys/current", headers=bearer(issued))).status_code == 200
    renamed = await api.client.patch(
        f"/v1/api-keys/key_{issued.key.id.hex}", json={"name": "billing"}, headers=bearer(admin)
    )
    assert renamed.status_code == 200, renamed.text
    current = await api.client.get("/v1/api-keys/current", headers=bearer(issued))
    assert current.json()["name"] == "billing"


async def test_current_shows_changes_made_elsewhere_once_the_mirror_has_them(api: Api) -> None:
    org = api.org(Plan.PRO)
    issued = await api.key(org)
    assert (await api.client.get("/v1/api-keys/current", headers=bearer(issued))).status_code == 200
    # Another process (here: the registry directly) renames the key and changes the plan.
    api.registry.rename_key(issued.key.id, name="renamed elsewhere", actor=OPERATOR)
    api.registry.change_plan(org.id, Plan.FREE, OPERATOR)
    await api.process.services.mirror.refresh()  # what the NATS wake-up or the poll does
    body = (await api.client.get("/v1/api-keys/current", headers=bearer(issued))).json()
    assert body["name"] == "renamed elsewhere"
    assert "audit:read" not in body["permissions"]


async def test_cards_stay_within_their_capacity(api: Api) -> None:
    cards = api.process.services.cards
    cards.capacity = 2
    for _ in range(4):
        issued = await api.key(api.org(Plan.PRO))
        response = await api.client.get("/v1/api-keys/current", headers=bearer(issued))
        assert response.status_code == 200
    assert len(cards) == 2


async def test_each_answer_from_the_kept_response_carries_only_its_own_request_headers(
    api: Api,
) -> None:
    issued = await api.key(api.org(Plan.PRO))
    answers = [
        await api.client.get("/v1/api-keys/current", headers=bearer(issued)) for _ in range(3)
    ]
    assert len({a.headers["x-request-id"] for a in answers}) == 3
    for answer in answers:
        assert answer.headers["content-type"] == "application/json"
        assert int(answer.headers["content-length"]) == len(answer.content)
        for name in ("x-request-id", "strict-transport-security", "content-length"):
            assert len(answer.headers.get_list(name)) == 1, (name, answer.headers)
    assert answers[0].json() == answers[2].json()


async def test_current_answers_the_api_key_object_as_the_key_listing_shows_it(api: Api) -> None:
    org = api.org(Plan.PRO)
    issued = await api.key(org)
    current = (await api.client.get("/v1/api-keys/current", headers=bearer(issued))).json()
    listed = (await api.client.get("/v1/api-keys", headers=bearer(issued))).json()["data"]
    [same] = [k for k in listed if k["id"] == current["id"]]
    # Last use is read at different moments (the card keeps it for a few seconds).
    assert {**current, "last_used_at": None} == {**same, "last_used_at": None}


async def test_concurrent_first_requests_of_a_key_read_the_store_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = await api.key(api.org(Plan.PRO))
    reads = []
    get_key = api.registry.get_key

    def counted(key_id: Any) -> Any:
        reads.append(key_id)
        return get_key(key_id)

    monkeypatch.setattr(api.registry, "get_key", counted)
    answers = await asyncio.gather(
        *(api.client.get("/v1/api-keys/current", headers=bearer(issued)) for _ in range(8))
    )
    assert [a.status_code for a in answers] == [200] * 8
    assert len({a.content for a in answers}) == 1
    assert reads == [issued.key.id]
