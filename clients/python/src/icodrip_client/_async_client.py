"""`AsyncIcodrip`: the asyncio client, the same surface as `Icodrip` with `await`."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from icodrip_client._core import DEFAULT_TIMEOUT, Call, ClientCore, failure, tls_verify
from icodrip_client._resources.affiliates import AsyncAffiliates
from icodrip_client._resources.api_keys import AsyncApiKeys
from icodrip_client._resources.audit import AsyncAudit
from icodrip_client._resources.events import AsyncEvents
from icodrip_client._resources.organization import AsyncOrganization
from icodrip_client._resources.usage import AsyncUsage
from icodrip_client._resources.webhooks import AsyncWebhooks
from icodrip_client.errors import APIError

T = TypeVar("T")


class AsyncIcodrip(ClientCore):
    """An asyncio client of the Icodrip Keys API; see `Icodrip` for the settings.

    ```python
    async with AsyncIcodrip(api_key=key, base_url="https://keys.example.com") as client:
        me = await client.api_keys.current()
        async for api_key in client.api_keys.list():
            ...
    ```
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
        http_client: httpx.AsyncClient | None = None,
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
            http_client = httpx.AsyncClient(
                verify=tls_verify(verify), timeout=timeout or DEFAULT_TIMEOUT
            )
        self._http = http_client
        self._timeout = timeout
        self.api_keys = AsyncApiKeys(self)
        self.affiliates = AsyncAffiliates(self)
        self.usage = AsyncUsage(self)
        self.audit = AsyncAudit(self)
        self.webhooks = AsyncWebhooks(self)
        self.events = AsyncEvents(self)
        self.organization = AsyncOrganization(self)

    async def request(
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
        return await self._run(call)

    async def _run(self, call: Call[T]) -> T:
        prepared = self.prepare(call)
        retries = 0
        while True:
            try:
                response = await self._http.request(
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
            await asyncio.sleep(delay)

    async def close(self) -> None:
        """Close the connections (not those of an `http_client` you gave)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncIcodrip:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
