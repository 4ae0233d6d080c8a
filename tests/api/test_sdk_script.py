"""`GET /sdk/v1/icodrip.js`: the browser SDK, served to any page with no key.

Its behaviour in a browser is tested in tests/dashboard/test_browser_sdk.py.
"""

from __future__ import annotations

from api.routes.sdk import SDK_FILE
from support.api import Api

SDK = "/sdk/v1/icodrip.js"


async def test_the_sdk_is_served_without_a_key_as_the_packaged_file(api: Api) -> None:
    response = await api.client.get(SDK)
    assert response.status_code == 200, response.text
    assert response.content == SDK_FILE.read_bytes()
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"


async def test_any_origin_may_load_it_as_a_module(api: Api) -> None:
    response = await api.client.get(SDK, headers={"Origin": "https://shop.example.com"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"


async def test_it_is_not_sniffed_as_anything_else(api: Api) -> None:
    response = await api.client.get(SDK)
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_caches_keep_it_and_revalidate_it_by_etag(api: Api) -> None:
    first = await api.client.get(SDK)
    assert first.headers["cache-control"] == "public, max-age=3600"
    again = await api.client.get(SDK, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]


async def test_another_etag_gets_the_file_again(api: Api) -> None:
    response = await api.client.get(SDK, headers={"If-None-Match": '"something-older"'})
    assert response.status_code == 200
    assert response.content == SDK_FILE.read_bytes()


async def test_a_key_sent_along_is_not_asked_about(api: Api) -> None:
    """Nothing is authenticated here: a wrong key does not stop a page from loading the SDK."""
    response = await api.client.get(SDK, headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 200


async def test_it_is_not_in_the_openapi_document(api: Api) -> None:
    schema = (await api.client.get("/schema/openapi.json")).json()
    assert not [path for path in schema["paths"] if path.startswith("/sdk")]


async def test_it_is_an_es_module_that_exports_the_class(api: Api) -> None:
    text = (await api.client.get(SDK)).text
    assert "export class Icodrip" in text
    assert "export default Icodrip" in text
