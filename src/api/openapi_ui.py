"""The OpenAPI pages under `/schema`: Swagger UI from this origin only, under a strict CSP.

Litestar's Swagger plugin loads Swagger UI from a CDN with no integrity hash and starts it with
an inline script, on the origin the dashboard's session cookie belongs to. Here Swagger UI is
served from the `swagger-ui-py` package's copy of `swagger-ui-dist` (byte for byte npm's; the
lock file pins the wheel's hash), started by a small script of our own, and every `/schema`
response carries a Content-Security-Policy that allows scripts and styles from this origin
only. The document itself stays at `/schema/openapi.json`.
"""

from __future__ import annotations

import functools
import html
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar.datastructures import ResponseHeader
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.params import FromPath
from litestar.response import File

from api.page_headers import PAGE_HEADERS

SCHEMA_PATH = "/schema"

SECURITY_HEADERS = [ResponseHeader(name=name, value=value) for name, value in PAGE_HEADERS.items()]

#: Starts Swagger UI on the page's `#swagger-ui` element, with the document its data names
#: (no validator: it would send the document's URL to swagger.io).
START_SCRIPT = b"""\
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis],
    validatorUrl: null,
  });
});
"""
PAGE_STYLE = b"body { margin: 0; padding: 0; }\n"


@functools.cache
def swagger_ui_dist() -> Path:
    """The folder of `swagger-ui-py`'s Swagger UI files (found without running its code)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@dataclass(frozen=True)
class Asset:
    """A file the page loads: from `swagger_ui_dist()`, or our own `content`."""

    media_type: str
    file: str | None = None  # in swagger_ui_dist()
    content: bytes = b""


ASSETS = {
    "swagger-ui-bundle.js": Asset("text/javascript; charset=utf-8", file="swagger-ui-bundle.js"),
    "swagger-ui.css": Asset("text/css; charset=utf-8", file="swagger-ui.css"),
    "favicon-32x32.png": Asset("image/png", file="favicon-32x32.png"),
    "start.js": Asset("text/javascript; charset=utf-8", content=START_SCRIPT),
    "page.css": Asset("text/css; charset=utf-8", content=PAGE_STYLE),
}


@get("/static/{name:str}", include_in_schema=False, sync_to_thread=False)
def schema_asset(name: FromPath[str]) -> Response[Any]:
    """One of the Swagger UI page's scripts, styles or images; nothing else."""
    asset = ASSETS.get(name)
    if asset is None:
        raise NotFoundException
    if asset.file is None:
        return Response(asset.content, media_type=asset.media_type)
    return File(
        swagger_ui_dist() / asset.file,
        media_type=asset.media_type,
        content_disposition_type="inline",
    )


class LocalSwaggerRenderPlugin(OpenAPIRenderPlugin):
    """Swagger UI at `/schema/swagger`, its files served by this app, no inline script or style."""

    def __init__(self, base: str = SCHEMA_PATH) -> None:
        super().__init__(path="/swagger")
        self.base = base
        self.assets = f"{base}/static"

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """The page: local scripts and styles only; the document is fetched by URL."""
        title = html.escape(str(openapi_schema["info"]["title"]))
        spec_url = html.escape(f"{self.base}/openapi.json")
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="icon" type="image/png" href="{self.assets}/favicon-32x32.png">
  <link rel="stylesheet" href="{self.assets}/swagger-ui.css">
  <link rel="stylesheet" href="{self.assets}/page.css">
  <script src="{self.assets}/swagger-ui-bundle.js" defer></script>
  <script src="{self.assets}/start.js" defer></script>
</head>
<body>
  <div id="swagger-ui" data-spec-url="{spec_url}"></div>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        """Serve the page's files; no OAuth2 redirect page (keys are Bearer tokens, not OAuth2)."""
        router.register(schema_asset)


def schema_router() -> Router:
    """The router the OpenAPI pages and the document are served by, with their headers."""
    return Router(
        path=SCHEMA_PATH,
        route_handlers=[],
        include_in_schema=False,
        response_headers=SECURITY_HEADERS,
        dto=None,
        return_dto=None,
    )
