"""API errors: one JSON shape with a stable `code`, never a stack trace."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
import structlog
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    SerializationException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from api.context import SCOPE_KEY
from domain.errors import DomainError, NotFound, PermissionExceeded
from domain.key_format import redact_keys
from domain.lifetime_policy import PolicyViolation
from domain.webhook_urls import WebhookUrlNotAllowed

_json = msgspec.json.Encoder()

log = structlog.get_logger()

_DOMAIN_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    PermissionExceeded: 403,
    WebhookUrlNotAllowed: 422,  # a validation error with a code of its own
    PolicyViolation: 422,  # the key asked for breaks the org's lifetime policy
}


class ApiError(HTTPException):
    """An error the API answers on purpose, with its stable code."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code


#: What an unreachable event store or read model raises (PostgreSQL down, pool exhausted).
STORE_ERRORS: tuple[type[Exception], ...] = (
    StoreOperationalError,
    StoreInterfaceError,
    psycopg.OperationalError,  # psycopg_pool.PoolTimeout included
    psycopg.InterfaceError,
)


def store_unavailable() -> ApiError:
    """503 `store_unavailable`, with the Retry-After every store outage answers with."""
    return ApiError(
        503,
        "store_unavailable",
        "the key store is unavailable right now; retry shortly",
        headers={"Retry-After": "5"},
    )


def internal_error() -> ApiError:
    """500 `internal_error`: a failure of ours, told without its details."""
    return ApiError(
        HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "something went wrong on our side"
    )


def unauthorized(code: str, message: str) -> ApiError:
    """401 with the `WWW-Authenticate: Bearer` challenge the contract promises."""
    challenge = f'Bearer realm="icodrip", error="invalid_token", error_description="{code}"'
    if code == "missing_api_key":
        challenge = 'Bearer realm="icodrip"'
    return ApiError(401, code, message, headers={"WWW-Authenticate": challenge})


def error_body(code: str, message: str, request_id: str | None) -> dict[str, Any]:
    """The contract's error shape; a key the message quotes (from a body) is only its hint."""
    return {"error": {"code": code, "message": redact_keys(message), "request_id": request_id}}


async def send_error(
    send: Any,
    status: int,
    code: str,
    message: str,
    request_id: str | None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """The contract's error body, sent on raw ASGI (middleware that answers before Litestar)."""
    body = _json.encode(error_body(code, message, request_id))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _request_id(request: Request[Any, Any, Any]) -> str | None:
    context: Any = request.scope.get(SCOPE_KEY)
    return None if context is None else str(context.request_id)


def _respond(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    return Response(
        error_body(code, message, _request_id(request)),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def handle_api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[dict[str, Any]]:
    return _respond(request, exc.status_code, exc.code, str(exc.detail), exc.headers)


def domain_error_status(exc: DomainError) -> int:
    """The HTTP status of a domain refusal: 404, 403, 422, or 409 for a conflict."""
    if exc.code == "validation_error":
        return 422
    return next((s for cls, s in _DOMAIN_STATUS.items() if isinstance(exc, cls)), 409)


def handle_domain_error(
    request: Request[Any, Any, Any], exc: DomainError
) -> Response[dict[str, Any]]:
    response = _respond(request, domain_error_status(exc), exc.code, exc.message)
    if isinstance(exc, PolicyViolation):  # which rule, for code as well as for people
        response.content["error"]["rule"] = exc.rule.value
    return response


def handle_validation(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    details = exc.extra if isinstance(exc.extra, list) else []
    message = "; ".join(
        f"{d.get('key') or d.get('source', 'body')}: {d.get('message')}"
        for d in details
        if isinstance(d, dict)
    )
    return _respond(request, 422, "validation_error", message or str(exc.detail))


def handle_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    if isinstance(exc, NotFoundException):
        return _respond(request, 404, "not_found", "no such resource")
    if isinstance(exc, MethodNotAllowedException):
        return _respond(request, 405, "method_not_allowed", str(exc.detail), exc.headers)
    if exc.status_code == 400 and isinstance(exc.__cause__, SerializationException):
        # Litestar's 400 for a body it could not decode (invalid, truncated, nested too deep).
        return _respond(request, 400, "malformed_json", str(exc.detail), exc.headers)
    code = {413: "payload_too_large", 415: "unsupported_media_type", 429: "rate_limit_exceeded"}
    return _respond(
        request,
        exc.status_code,
        code.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error"),
        str(exc.detail),
        exc.headers,
    )


def handle_store_unavailable(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[dict[str, Any]]:
    """The event store or a read model is unreachable (PostgreSQL down, pool exhausted): 503."""
    log.warning("api.store_unavailable", error=type(exc).__name__, request_id=_request_id(request))
    health = getattr(request.app.state, "store_health", None)
    if health is not None:  # answer the next requests at once, until the store is back
        health.mark_down()
    return handle_api_error(request, store_unavailable())


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error("api.unhandled_error", error=type(exc).__name__, request_id=_request_id(request))
    return handle_api_error(request, internal_error())


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    ApiError: handle_api_error,
    DomainError: handle_domain_error,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    **dict.fromkeys(STORE_ERRORS, handle_store_unavailable),
    Exception: handle_unexpected,
}
