"""Keys see their own organization's data in their own environment, and nothing else."""

from __future__ import annotations

from domain.key_format import Environment
from support.api import Api, assert_error, bearer


async def test_a_created_affiliate_can_be_read_back(api: Api) -> None:
    issued = await api.key(api.org())
    created = await api.client.post(
        "/v1/affiliates", json={"name": "Ann", "email": "ann@example.com"}, headers=bearer(issued)
    )
    assert created.status_code == 201, created.text
    affiliate = created.json()
    fetched = await api.client.get(f"/v1/affiliates/{affiliate['id']}", headers=bearer(issued))
    assert fetched.json() == affiliate
    assert affiliate["env"] == "live" and affiliate["object"] == "affiliate"


async def test_a_test_key_never_sees_live_data(api: Api) -> None:
    org = api.org()
    live, test = await api.key(org, Environment.LIVE), await api.key(org, Environment.TEST)
    created = await api.client.post("/v1/affiliates", json={"name": "Live"}, headers=bearer(live))
    affiliate_id = created.json()["id"]

    listing = await api.client.get("/v1/affiliates", headers=bearer(test))
    assert listing.json()["data"] == []
    single = await api.client.get(f"/v1/affiliates/{affiliate_id}", headers=bearer(test))
    assert_error(single, 404, "not_found")


async def test_another_organizations_affiliate_is_not_found(api: Api) -> None:
    mine, theirs = await api.key(api.org()), await api.key(api.org())
    created = await api.client.post("/v1/affiliates", json={"name": "Mine"}, headers=bearer(mine))
    response = await api.client.get(
        f"/v1/affiliates/{created.json()['id']}", headers=bearer(theirs)
    )
    assert_error(response, 404, "not_found")
    assert (await api.client.get("/v1/affiliates", headers=bearer(theirs))).json()["data"] == []


async def test_the_list_pages_with_a_cursor(api: Api) -> None:
    issued = await api.key(api.org())
    names = [f"A{i}" for i in range(5)]
    for name in names:
        await api.client.post("/v1/affiliates", json={"name": name}, headers=bearer(issued))
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await api.client.get("/v1/affiliates", params=params, headers=bearer(issued))
        ).json()
        seen += [a["name"] for a in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names


async def test_a_forged_cursor_is_a_validation_error(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.get(
        "/v1/affiliates", params={"cursor": "bm9wZQ"}, headers=bearer(issued)
    )
    assert_error(response, 422, "validation_error")


async def test_an_invalid_body_is_a_validation_error_naming_the_field(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.post(
        "/v1/affiliates", json={"name": "", "colour": "red"}, headers=bearer(issued)
    )
    assert_error(response, 422, "validation_error")


async def test_an_oversized_body_is_refused_with_413(api: Api) -> None:
    issued = await api.key(api.org())
    response = await api.client.post(
        "/v1/affiliates",
        content=b'{"name": "' + b"x" * 100_000 + b'"}',
        headers={**bearer(issued), "Content-Type": "application/json"},
    )
    assert_error(response, 413, "payload_too_large")
