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
from domain.lifetime_policy import PolicyRule

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
                "rule": Schema(
                    type=OpenAPIType.STRING,
                    enum=[rule.value for rule in PolicyRule],
                    description="With `policy_violation` only: the lifetime policy's rule.",
                ),
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
#: Refusals particular to a route: (path, method) → status → description (replacing the
#: generic one), above all of routes that a scanner's signature opens, not a key.
_BREAKS_POLICY = (
    "The body is not valid (`validation_error`), or the key would break the organization's "
    "lifetime policy (`policy_violation`, naming the `rule`)"
)
ROUTE_ERRORS: dict[tuple[str, str], dict[str, str]] = {
    ("/v1/api-keys", "post"): {"422": _BREAKS_POLICY},
    ("/v1/api-keys/{key_id}/roll", "post"): {"422": _BREAKS_POLICY},
    ("/v1/organization/policy", "patch"): {
        "403": (
            "The key lacks api_keys:write, is a test key, has a restriction, an expiry or "
            "allowed IPs, or was rolled or flagged exposed (`insufficient_permissions`)"
        ),
    },
    ("/v1/leaks", "post"): {
        "401": (
            "The report's HMAC signature is missing, wrong or stale (`missing_signature`, "
            "`missing_timestamp`, `invalid_signature`, `stale_timestamp`)"
        ),
        "503": "Leak reports are not configured here (`leak_reports_disabled`)",
        "413": "The body is over 1 MiB (`payload_too_large`)",
    },
    ("/v1/leaks/github", "post"): {
        "401": (
            "GitHub's signature is missing or does not match the body, or names a key that "
            "GitHub's key document, fetched just now, does not hold (`missing_signature`, "
            "`invalid_signature`, `unknown_key_identifier`)"
        ),
        "503": (
            "GitHub's secret-scanning public keys cannot be fetched, or the signature names a "
            "key we do not hold and they were fetched less than a minute ago; retry after "
            "Retry-After (`leak_keys_unavailable`)"
        ),
        "413": "The body is over 1 MiB (`payload_too_large`)",
    },
    ("/v1/public/revoke", "post"): {
        "422": "No keys, more than 100, or a string over 200 characters (`validation_error`)",
        "429": "Too many calls from this client address (`rate_limit_exceeded`, Retry-After)",
        "503": "The rate limiter cannot count right now (`rate_limiter_unavailable`)",
    },
}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _error_response(status: str, description: str | None = None) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description or _DESCRIPTIONS[status],
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
    for path, path_item in (openapi.paths or {}).items():
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
            route_errors = ROUTE_ERRORS.get((path.rstrip("/") or "/", method), {})
            for status, description in route_errors.items():
                responses[status] = _error_response(status, description)
    return openapi


def document_errors(app: Litestar) -> None:
    """Write the error responses into `app`'s OpenAPI document (built now, served as is)."""
    add_headers(add_error_responses(app.openapi_schema))
