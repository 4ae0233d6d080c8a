"""The OpenAPI pages load nothing from other origins and run under a strict CSP (issue 10, #11).

Chromium rendering Swagger UI under that policy: tests/dashboard/test_schema_in_browser.py.
"""

from __future__ import annotations

import re

import pytest

from support.api import Api

pytestmark = pytest.mark.parametrize("store_env", ["sqlite"], indirect=True)

PAGES = ["/schema", "/schema/swagger"]
_REFERENCES = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]*)\"""")
_INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


async def test_the_schema_pages_load_swagger_ui_from_this_origin_only(api: Api) -> None:
    for path in PAGES:
        page = await api.client.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html")
        references = _REFERENCES.findall(page.text)
        assert references, f"{path} loads no script or style"
        assert all(ref.startswith("/schema/static/") for ref in references), references
        assert not _INLINE_SCRIPT.search(page.text), "an inline script"
        assert "<style" not in page.text and " style=" not in page.text, "an inline style"
        for ref in references:
            asset = await api.client.get(ref)
            assert asset.status_code == 200, ref
            assert asset.headers["x-content-type-options"] == "nosniff"
    bundle = await api.client.get("/schema/static/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in bundle.content
    assert (await api.client.get("/schema/static/../../app.py")).status_code == 404
    assert (await api.client.get("/schema/static/LICENSE")).status_code == 404


async def test_the_schema_pages_carry_a_strict_content_security_policy(api: Api) -> None:
    for path in [*PAGES, "/schema/no-such-page"]:
        page = await api.client.get(path)
        assert page.headers["content-type"].startswith("text/html"), path
        policy = page.headers.get("content-security-policy", "")
        directives = dict(d.strip().partition(" ")[::2] for d in policy.split(";"))
        assert directives.get("default-src") == "'none'", (path, policy)
        assert directives.get("script-src") == "'self'", (path, policy)
        assert directives.get("style-src") == "'self'", (path, policy)
        assert directives.get("frame-ancestors") == "'none'", (path, policy)
        assert page.headers.get("x-frame-options") == "DENY", path
        assert page.headers.get("x-content-type-options") == "nosniff", path
    # Its inline script could not run under the policy, and the API has no OAuth2 to redirect.
    assert (await api.client.get("/schema/oauth2-redirect.html")).status_code == 404


async def test_the_openapi_document_is_still_served_at_schema_openapi_json(api: Api) -> None:
    answer = await api.client.get("/schema/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"].startswith("3.")
    assert "/v1/api-keys" in document["paths"]
