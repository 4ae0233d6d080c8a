"""`GET /sdk/v1/icodrip.js`: the browser SDK (`api/sdk/icodrip.js`), served with no key.

Pages on any origin import it as an ES module, and a module script loaded from another origin
is fetched in CORS mode: hence `Access-Control-Allow-Origin: *` (it is public code, sent with
no credentials and no key). `v1` is the major version: compatible changes replace the file in
place, so caches keep it briefly (`Cache-Control`) and revalidate by `ETag` (304).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.status_codes import HTTP_304_NOT_MODIFIED

SDK_FILE = Path(__file__).resolve().parent.parent / "sdk" / "icodrip.js"
SDK_PATH = "/sdk/v1/icodrip.js"
#: Litestar adds `; charset=utf-8` to a text/* type.
MEDIA_TYPE = "text/javascript"
#: An hour in caches (a fix reaches pages within one), then revalidated by ETag.
CACHE_CONTROL = "public, max-age=3600"


def etag_of(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an `If-None-Match` header names `etag` (weakly compared, as RFC 9110 asks)."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def sdk_script(file: Path = SDK_FILE) -> HTTPRouteHandler:
    """The route serving `file`, read once, when the app is built."""
    content = file.read_bytes()
    etag = etag_of(content)
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "Access-Control-Allow-Origin": "*",
        # Also loadable by pages that require it of cross-origin resources (COEP).
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
    }

    @get(
        SDK_PATH,
        name="sdk-script",
        include_in_schema=False,
        exclude_from_auth=True,
        sync_to_thread=False,
    )
    def icodrip_js(request: Request[Any, Any, Any]) -> Response[bytes]:
        """The browser SDK, or 304 when the client's copy is current."""
        if matches(request.headers.get("if-none-match"), etag):
            return Response(b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
        return Response(content, media_type=MEDIA_TYPE, headers=headers)

    return icodrip_js
