"""What the client raises: one base class, the API's refusals by status, transport failures.

Every refusal the API answers is `{"error": {"code", "message", "request_id"}}`; `APIError`
carries those (the `code` is the stable, machine-readable part), the status, and the raw body. A
refusal's class is chosen by its status, or by status and code where a code adds fields of its
own (`policy_violation`: `PolicyViolationError.rule`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


class IcodripError(Exception):
    """Anything this client raises on purpose."""


class APIError(IcodripError):
    """The API answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None,
        request_id: str | None,
        body: Any,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.body = body
        self.headers = headers

    def __str__(self) -> str:
        where = f", request {self.request_id}" if self.request_id else ""
        return f"{self.status} {self.code or 'error'}: {self.message}{where}"

    @property
    def retry_after(self) -> int | None:
        """Seconds the API asks to wait before trying again (429 and 503 say so), or None."""
        return _int_header(self.headers, "retry-after")


class BadRequestError(APIError):
    """400: the request could not be read (plain HTTP, malformed JSON)."""


class AuthenticationError(APIError):
    """401: no usable key (missing, malformed, unknown, revoked or expired)."""


class PermissionDeniedError(APIError):
    """403: the key may not do this (a permission it lacks, where it is used, ...)."""


class NotFoundError(APIError):
    """404: no such route, or no such resource for this key (another org's included)."""


class ConflictError(APIError):
    """409: the resource's state forbids the change, or an idempotent request is in flight."""


class UnprocessableEntityError(APIError):
    """422: a parameter or body field is invalid (or an idempotency key was reused)."""


ValidationError = UnprocessableEntityError


class PolicyViolationError(UnprocessableEntityError):
    """422 `policy_violation`: the key asked for (created or rolled) breaks the organization's
    key-lifetime policy; `rule` names the rule (`max_lifetime`, `require_expiry`)."""

    @property
    def rule(self) -> str | None:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        rule = error.get("rule") if isinstance(error, dict) else None
        return rule if isinstance(rule, str) else None


class RateLimitError(APIError):
    """429: a rate limit is used up; `retry_after` seconds until it is worth trying again.

    `limit`, `remaining` and `reset` are the key's window (absent for a refusal that is not
    about the key's own limit, such as `too_many_failed_attempts`)."""

    @property
    def limit(self) -> int | None:
        return _int_header(self.headers, "x-ratelimit-limit")

    @property
    def remaining(self) -> int | None:
        return _int_header(self.headers, "x-ratelimit-remaining")

    @property
    def reset(self) -> int | None:
        """Unix seconds when the window ends."""
        return _int_header(self.headers, "x-ratelimit-reset")


class InternalServerError(APIError):
    """5xx: the service failed or a backing service is unavailable (503 `Retry-After`)."""


class APIConnectionError(IcodripError):
    """No answer: the connection failed or broke (the request may or may not have arrived)."""


class APITimeoutError(APIConnectionError):
    """No answer in time."""


class UnexpectedResponseError(IcodripError):
    """A success response that is not what the API documents (a proxy's page, say)."""


class WebhookVerificationError(IcodripError):
    """A webhook message's signature or timestamp did not check out: do not trust it."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}
#: Refusals with a class of their own, by status and code.
_BY_CODE: dict[tuple[int, str], type[APIError]] = {
    (422, "policy_violation"): PolicyViolationError,
}


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def error_code(body: Any) -> tuple[str | None, str | None, str | None]:
    """The (code, message, request_id) of an error body, as far as it has them."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, None
    fields = (error.get("code"), error.get("message"), error.get("request_id"))
    code, message, request_id = (value if isinstance(value, str) else None for value in fields)
    return code, message, request_id


def api_error(response: httpx.Response) -> APIError:
    """The exception for an error response (its body already read)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text  # a proxy's HTML page, say
    code, message, request_id = error_code(body)
    status = response.status_code
    cls = (
        _BY_CODE.get((status, code or ""))
        or _BY_STATUS.get(status)
        or (InternalServerError if status >= 500 else APIError)
    )
    return cls(
        message or response.reason_phrase or "error",
        status=status,
        code=code,
        request_id=request_id or response.headers.get("x-request-id"),
        body=body,
        headers=response.headers,
    )
