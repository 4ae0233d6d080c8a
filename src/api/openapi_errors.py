"""The error responses every operation can give, written into the served OpenAPI document.

Litestar documents only each handler's success status and its own 400 validation body; this
API answers bad input with 422 and the contract's error shape, refuses keys with 401/403/429,
unknown ids with 404, oversized bodies with 413, and key management with 503 while its store
is unreachable. Clients (and schemathesis) read those statuses and that shape from the schema.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.enums import MediaType
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Reference,
    Schema,
)

from api.openapi_headers import add_headers

ERROR_SCHEMA_NAME = "Error"

ERROR_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["error"],
    properties={
        "error": Schema(
            type=OpenAPIType.OBJECT,
            required=["code", "message", "request_id"],
            properties={
                "code": Schema(type=OpenAPIType.STRING, description="Stable, machine-readable."),
                "message": Schema(type=OpenAPIType.STRING),
                "request_id": Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL]),
            },
        )
    },
)

_DESCRIPTIONS = {
    "400": "Plain HTTP refused (`https_required`) or a malformed request",
    "401": "Missing, malformed, unknown, revoked or expired API key",
    "403": "The key lacks the permission this operation needs",
    "404": "No such resource in the key's organization",
    "409": "The resource's state does not allow this change",
    "413": "The request body is too large (`payload_too_large`)",
    "422": "The request's parameters or body are not valid (`validation_error`)",
    "429": "Rate limit exceeded (`rate_limit_exceeded`, with Retry-After)",
    "503": (
        "A backing store is unavailable; retry after Retry-After "
        "(`store_unavailable`, `rate_limiter_unavailable`)"
    ),
}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _error_response(status: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=_DESCRIPTIONS[status],
        content={
            MediaType.JSON: OpenAPIMediaType(
                schema=Reference(ref=f"#/components/schemas/{ERROR_SCHEMA_NAME}")
            )
        },
    )


def add_error_responses(openapi: OpenAPI) -> OpenAPI:
    """Document the contract's error statuses on every operation (in place; returns it)."""
    components = openapi.components
    if components.schemas is None:
        components.schemas = {}
    components.schemas[ERROR_SCHEMA_NAME] = ERROR_SCHEMA
    for path_item in (openapi.paths or {}).values():
        for method in _METHODS:
            operation = getattr(path_item, method, None)
            if operation is None:
                continue
            statuses = ["400"]
            parameters = operation.parameters or []
            if operation.security:
                statuses += ["401", "403", "429", "503"]
            if parameters or operation.request_body is not None:
                statuses.append("422")
            if any(getattr(p, "param_in", None) == "path" for p in parameters):
                statuses += ["404", "409"]
            if operation.request_body is not None:
                statuses.append("413")
            if operation.security and method == "post":  # Idempotency-Key (api.idempotency)
                statuses += ["409", "422"]
            responses = operation.responses = dict(operation.responses or {})
            for status in statuses:
                responses[status] = _error_response(status)  # replaces Litestar's own 400
    return openapi


def document_errors(app: Litestar) -> None:
    """Write the error responses into `app`'s OpenAPI document (built now, served as is)."""
    add_headers(add_error_responses(app.openapi_schema))
