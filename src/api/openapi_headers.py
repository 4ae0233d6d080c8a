"""The headers the API sends and reads, written into the served OpenAPI document.

Litestar documents a handler's parameters and bodies; the headers the edge and the key gate
add (`X-Request-Id` everywhere, the rate-limit headers on every counted answer, `Retry-After`
on 429 and 503) and the `Idempotency-Key` every keyed `POST` honours are the contract's, and
clients (and SDK generators) read them from here. Defined once under `components`.
"""

from __future__ import annotations

from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Parameter,
    Reference,
    Schema,
)

from api.idempotency import MAX_IDEMPOTENCY_KEY, REPLAYED_HEADER

_INTEGER = Schema(type=OpenAPIType.INTEGER)
_STRING = Schema(type=OpenAPIType.STRING)

HEADERS = {
    "X-Request-Id": OpenAPIHeader(
        schema=_STRING,
        description="This request's id; errors carry it as `error.request_id`.",
    ),
    "X-RateLimit-Limit": OpenAPIHeader(
        schema=_INTEGER, description="Requests allowed in the current 60-second window."
    ),
    "X-RateLimit-Remaining": OpenAPIHeader(
        schema=_INTEGER, description="Requests left in the current window."
    ),
    "X-RateLimit-Reset": OpenAPIHeader(
        schema=_INTEGER, description="Unix seconds when the current window ends."
    ),
    "RateLimit-Policy": OpenAPIHeader(
        schema=_STRING,
        description='IETF draft: `"per-key";q=<limit>;w=60` (or `"per-address"`).',
    ),
    "RateLimit": OpenAPIHeader(
        schema=_STRING,
        description='IETF draft: `"per-key";r=<remaining>;t=<seconds to reset>`.',
    ),
    "Retry-After": OpenAPIHeader(
        schema=_INTEGER, description="Seconds to wait before trying again."
    ),
    REPLAYED_HEADER: OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING, enum=["true"]),
        description="Present when this is the stored answer to an earlier request that "
        "carried the same `Idempotency-Key`.",
    ),
}
_RATE_LIMIT = (
    *("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"),
    *("RateLimit-Policy", "RateLimit"),
)
#: Answers given before the key was counted carry no rate-limit headers.
_UNCOUNTED = {"401"}

IDEMPOTENCY_PARAMETER = "Idempotency-Key"
_IDEMPOTENCY = Parameter(
    name=IDEMPOTENCY_PARAMETER,
    param_in="header",
    required=False,
    schema=Schema(
        type=OpenAPIType.STRING,
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY,
        pattern=r"^[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*$",  # printable ASCII, not blank
    ),
    description=(
        "Makes a retried POST safe: the same key with the same body within 24 hours returns "
        "the first answer again (`Idempotent-Replayed: true`) instead of acting twice. Scoped "
        "to the API key; a key reused with another body is `422 idempotency_key_reused`, one "
        "still being answered is `409 idempotency_key_in_use`."
    ),
)
_METHODS = ("get", "put", "post", "delete", "patch")


def _ref(name: str) -> Reference:
    return Reference(ref=f"#/components/headers/{name}")


def _headers_of(status: str, *, keyed: bool, idempotent: bool) -> list[str]:
    names = ["X-Request-Id"]
    if keyed and status not in _UNCOUNTED:
        names += _RATE_LIMIT
    if status in ("409", "429", "503"):  # 409: idempotency_key_in_use
        names.append("Retry-After")
    if idempotent and status.startswith("2"):
        names.append(REPLAYED_HEADER)
    return names


def add_headers(openapi: OpenAPI) -> OpenAPI:
    """Document the response headers of every operation, and `Idempotency-Key` on keyed POSTs
    (in place; returns it). Run after the error responses are written."""
    components = openapi.components
    components.headers = {**(components.headers or {}), **HEADERS}
    for path_item in (openapi.paths or {}).values():
        for method in _METHODS:
            operation = getattr(path_item, method, None)
            if operation is None:
                continue
            keyed = bool(operation.security)
            idempotent = keyed and method == "post"
            if idempotent:
                operation.parameters = [*(operation.parameters or []), _IDEMPOTENCY]
            for status, response in (operation.responses or {}).items():
                if not isinstance(response, OpenAPIResponse):
                    continue
                wanted = _headers_of(status, keyed=keyed, idempotent=idempotent)
                response.headers = {
                    **(response.headers or {}),
                    **{name: _ref(name) for name in wanted},
                }
    return openapi
