"""`Icodrip`: the synchronous client."""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from icodrip_client._core import DEFAULT_TIMEOUT, Call, ClientCore, failure, tls_verify
from icodrip_client._resources.affiliates import Affiliates
from icodrip_client._resources.api_keys import ApiKeys
from icodrip_client._resources.audit import Audit
from icodrip_client._resources.events import Events
from icodrip_client._resources.organization import Organization
from icodrip_client._resources.usage import Usage
from icodrip_client._resources.webhooks import Webhooks
from icodrip_client.errors import APIError

T = TypeVar("T")


class Icodrip(ClientCore):
    """A client of the Icodrip Keys API.

    ```python
    with Icodrip(api_key=key, base_url="https://keys.example.com") as client:
        me = client.api_keys.current()
    ```

    `max_retries` repeats (default 2, 0: none) of a request the server did not act on (a 429
    rate limit or a 503, after its `Retry-After`), and of one safe to repeat whose answer may
    have been lost (a broken or timed-out connection, a 502 or 504, after a backoff), never
    waiting longer than `max_retry_delay` seconds at once; a 500 and a 429
    `too_many_failed_attempts` are raised at once. Safe to repeat: GET and PATCH (it sets
    values), and POST because each carries an `Idempotency-Key` (one is made per call unless
    you give `idempotency_key=`); not DELETE (its repeat would answer 404).
    `verify`: True, False, a CA bundle's path, or an `ssl.SSLContext`. `http_client`: an
    `httpx.Client` of yours (proxies, event hooks, transports); it is then yours to close, and
    `verify` and `timeout` are its own unless given.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        max_retries: int = 2,
        timeout: float | httpx.Timeout | None = None,
        verify: bool | str | ssl.SSLContext = True,
        max_retry_delay: float = 60.0,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            api_key,
            base_url,
            max_retries=max_retries,
            max_retry_delay=max_retry_delay,
            default_headers=default_headers,
        )
        self._owns_http = http_client is None
        if http_client is None:
            http_client = httpx.Client(
                verify=tls_verify(verify), timeout=timeout or DEFAULT_TIMEOUT
            )
        self._http = http_client
        self._timeout = timeout
        self.api_keys = ApiKeys(self)
        self.affiliates = Affiliates(self)
        self.usage = Usage(self)
        self.audit = Audit(self)
        self.webhooks = Webhooks(self)
        self.events = Events(self)
        self.organization = Organization(self)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Any route (`path` from `/v1/...`), with this client's key, retries and errors; the
        decoded JSON answer."""
        call = Call(method.upper(), path, lambda body: body, params or {}, json, idempotency_key)
        return self._run(call)

    def _run(self, call: Call[T]) -> T:
        prepared = self.prepare(call)
        retries = 0
        while True:
            try:
                response = self._http.request(
                    prepared.method,
                    prepared.url,
                    params=prepared.params,
                    json=prepared.body,
                    headers=prepared.headers,
                    timeout=httpx.USE_CLIENT_DEFAULT if self._timeout is None else self._timeout,
                )
            except httpx.RequestError as error:
                delay = self.retry_policy.after_failure(error, retries, prepared.safe)
                if delay is None:
                    raise failure(error) from error
                reason = type(error).__name__
            else:
                try:
                    return self.settle(call, response)
                except APIError as error:
                    delay = self.retry_policy.after_refusal(
                        error, retries, prepared.safe, time.time()
                    )
                    if delay is None:
                        raise
                    reason = f"{error.status} {error.code}"
            retries += 1
            self.note_retry(prepared, reason, delay, retries)
            time.sleep(delay)

    def close(self) -> None:
        """Close the connections (not those of an `http_client` you gave)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Icodrip:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
