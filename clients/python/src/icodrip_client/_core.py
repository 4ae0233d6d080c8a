"""What the sync and async clients share: settings, requests as values, reading answers.

A resource method describes its request as a `Call` (method, path, parameters, body, how to
read the answer); the clients only differ in how they send it and wait between attempts.
"""

from __future__ import annotations

import logging
import os
import ssl
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Final, Generic, TypeVar
from urllib.parse import quote

import httpx

from icodrip_client._models.fields import Raw, obj
from icodrip_client._models.records import RateLimit
from icodrip_client._retry import KEYED_METHODS, RetryPolicy, is_safe_to_repeat
from icodrip_client._version import __version__
from icodrip_client.errors import (
    APIConnectionError,
    APITimeoutError,
    UnexpectedResponseError,
    api_error,
)

T = TypeVar("T")
Cursor = str | int
Params = Mapping[str, str | int]

log = logging.getLogger("icodrip_client")

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request to the API and how to read its answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Params = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    #: False for the routes anyone may call (`/v1/public/…`): the client's key is not sent.
    authenticated: bool = True


@dataclass(frozen=True, slots=True)
class PageData(Generic[T]):
    """One page of a list: its items, the cursor of the next page (None: the last), the JSON."""

    items: tuple[T, ...]
    next_cursor: Cursor | None
    raw: Raw


@dataclass(frozen=True, slots=True)
class Listing(Generic[T]):
    """A paginated list: `page(cursor)` is the call for the page at `cursor` (None: first)."""

    path: str
    item: Callable[[Raw], T]
    params: Params = field(default_factory=dict)
    cursor_param: str = "cursor"

    def page(self, cursor: Cursor | None) -> Call[PageData[T]]:
        params = dict(self.params)
        if cursor is not None:
            params[self.cursor_param] = cursor
        return Call("GET", self.path, self._read, params=params)

    def _read(self, body: Any) -> PageData[T]:
        raw = obj(body)
        data = raw.get("data")
        if not isinstance(data, list):
            raise UnexpectedResponseError("expected a list in data")
        cursor = raw.get("next_cursor")
        next_cursor = cursor if isinstance(cursor, str | int) and cursor != "" else None
        return PageData(tuple(self.item(obj(item, "item")) for item in data), next_cursor, raw)


def path(*segments: str) -> str:
    """`/v1/a/b`: each segment escaped, so an id can never reach another route."""
    return "/v1/" + "/".join(quote(segment, safe="") for segment in segments)


def compact(**values: Any) -> dict[str, Any]:
    """The given values without the None ones (the API's defaults apply to those)."""
    return {name: value for name, value in values.items() if value is not None}


def rfc3339(value: datetime | str | None) -> str | None:
    """A time as the API reads it; a datetime must say its time zone."""
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a time sent to the API needs a time zone (e.g. datetime.now(UTC))")
    return value.isoformat().replace("+00:00", "Z")


def as_list(values: Any) -> list[Any] | None:
    return None if values is None else list(values)


class Unchanged(Enum):
    """The type of `UNCHANGED`: a setting left out of a change, where None turns it off."""

    UNCHANGED = "UNCHANGED"

    def __repr__(self) -> str:
        return "UNCHANGED"


#: The default of a setting a change leaves as it is (`None` means "off" there).
UNCHANGED: Final = Unchanged.UNCHANGED


def whole(duration: timedelta, unit: timedelta, what: str) -> int:
    """`duration` as a count of `unit`s (seconds, minutes), as the API takes it; a duration
    that is not a whole number of them is refused rather than rounded."""
    if not isinstance(duration, timedelta):
        raise TypeError(f"{what}: give a timedelta, e.g. timedelta(days=90)")
    count, rest = divmod(duration, unit)
    if rest:
        raise ValueError(f"{what} must be a whole number of {_unit_name(unit)}")
    return count


def _unit_name(unit: timedelta) -> str:
    names = {timedelta(seconds=1): "seconds", timedelta(minutes=1): "minutes"}
    return names.get(unit, str(unit))


def tls_verify(verify: bool | str | ssl.SSLContext) -> bool | ssl.SSLContext:
    """What httpx takes for `verify`: a CA bundle's path becomes a context trusting it."""
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def rate_limit_of(headers: httpx.Headers) -> RateLimit | None:
    """The rate-limit headers of a response, if it carries them."""
    if "x-ratelimit-limit" not in headers:
        return None
    policy = headers.get("ratelimit-policy", "")
    name = policy.split(";", 1)[0].strip().strip('"') or None
    return RateLimit(
        limit=_int(headers.get("x-ratelimit-limit")),
        remaining=_int(headers.get("x-ratelimit-remaining")),
        reset=_int(headers.get("x-ratelimit-reset")),
        retry_after=_int(headers.get("retry-after")),
        policy=name,
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A call ready to send, the same on every attempt (its idempotency key included)."""

    method: str
    url: str
    params: Params
    body: Mapping[str, Any] | None
    headers: dict[str, str]
    safe: bool


class ClientCore:
    """Settings and the reading of answers, shared by `Icodrip` and `AsyncIcodrip`."""

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        *,
        max_retries: int,
        max_retry_delay: float,
        default_headers: Mapping[str, str] | None,
    ) -> None:
        api_key = api_key or os.environ.get("ICODRIP_API_KEY")
        base_url = base_url or os.environ.get("ICODRIP_BASE_URL")
        if not api_key:
            raise ValueError("give api_key=... (or set ICODRIP_API_KEY)")
        if not base_url:
            raise ValueError("give base_url=... (or set ICODRIP_BASE_URL)")
        if httpx.URL(base_url).scheme != "https":
            # The API refuses plain HTTP and flags a secret key sent that way as exposed.
            raise ValueError("base_url must be https://: the API is served over HTTPS only")
        self.base_url = base_url.rstrip("/")
        self.retry_policy = RetryPolicy(max_retries, max_retry_delay)
        #: The rate-limit headers of the last response that carried them (None before).
        self.rate_limit: RateLimit | None = None
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": f"icodrip-python/{__version__} httpx/{httpx.__version__}",
            **(default_headers or {}),
        }

    @property
    def max_retries(self) -> int:
        return self.retry_policy.max_retries

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def prepare(self, call: Call[Any]) -> Prepared:
        headers = dict(self._headers)
        key = call.idempotency_key or None
        if key is None and call.method in KEYED_METHODS:
            # One per call, the same on each of its attempts: the server keeps and replays the
            # answers of POSTs, which makes repeating them safe.
            key = str(uuid.uuid4())
        if key is not None:
            headers["Idempotency-Key"] = key
        if not call.authenticated:  # a route open to anyone: the key is none of its business
            headers = {name: v for name, v in headers.items() if name.lower() != "authorization"}
        return Prepared(
            method=call.method,
            url=self.base_url + call.path,
            params=call.params,
            body=call.body,
            headers=headers,
            safe=is_safe_to_repeat(call.method, key),
        )

    def settle(self, call: Call[T], response: httpx.Response) -> T:
        """The call's result from a (read) response, or the APIError it stands for."""
        seen = rate_limit_of(response.headers)
        if seen is not None:
            self.rate_limit = seen
        if not response.is_success:
            raise api_error(response)
        try:
            body: Any = response.json() if response.content else None
        except ValueError:
            raise UnexpectedResponseError(
                f"{response.status_code} answer is not JSON (request {request_id(response)})"
            ) from None
        return call.parse(body)

    def note_retry(self, prepared: Prepared, reason: str, delay: float, attempt: int) -> None:
        log.info(
            "icodrip: %s %s %s; retry %d of %d in %.2fs",
            prepared.method,
            httpx.URL(prepared.url).path,
            reason,
            attempt,
            self.max_retries,
            delay,
        )


def request_id(response: httpx.Response) -> str | None:
    found: str | None = response.headers.get("x-request-id")
    return found


def failure(error: httpx.RequestError) -> APIConnectionError:
    """The client's exception for a request that got no answer."""
    if isinstance(error, httpx.TimeoutException):
        return APITimeoutError(f"no answer in time: {type(error).__name__}")
    return APIConnectionError(f"connection failed: {type(error).__name__}: {error}")
