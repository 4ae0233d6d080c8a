"""`/v1/webhooks`: endpoints, their secrets, tests, and their deliveries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from icodrip_client._core import Call, Cursor, Listing, as_list, compact, path
from icodrip_client._models.fields import obj
from icodrip_client._models.hooks import WebhookDelivery, WebhookEndpoint, WebhookTest
from icodrip_client._resources._base import AsyncResource, Runs, RunsAsync, SyncResource
from icodrip_client.pagination import AsyncPager, Page


def _endpoint(body: Any) -> WebhookEndpoint:
    return WebhookEndpoint.from_dict(obj(body))


def _delivery(body: Any) -> WebhookDelivery:
    return WebhookDelivery.from_dict(obj(body))


def _listing() -> Listing[WebhookEndpoint]:
    return Listing(path("webhooks"), WebhookEndpoint.from_dict)


def _create(
    url: str,
    events: Iterable[str],
    description: str | None,
    env: str | None,
    idempotency_key: str | None,
) -> Call[WebhookEndpoint]:
    body = compact(url=url, events=list(events), description=description, env=env)
    return Call("POST", path("webhooks"), _endpoint, body=body, idempotency_key=idempotency_key)


def _get(webhook_id: str) -> Call[WebhookEndpoint]:
    return Call("GET", path("webhooks", webhook_id), _endpoint)


def _update(
    webhook_id: str,
    url: str | None,
    events: Iterable[str] | None,
    description: str | None,
    enabled: bool | None,
) -> Call[WebhookEndpoint]:
    body = compact(url=url, events=as_list(events), description=description, enabled=enabled)
    return Call("PATCH", path("webhooks", webhook_id), _endpoint, body=body)


def _delete(webhook_id: str) -> Call[WebhookEndpoint]:
    return Call("DELETE", path("webhooks", webhook_id), _endpoint)


def _rotate(webhook_id: str, idempotency_key: str | None) -> Call[WebhookEndpoint]:
    where = path("webhooks", webhook_id, "rotate-secret")
    return Call("POST", where, _endpoint, idempotency_key=idempotency_key)


def _test(webhook_id: str, idempotency_key: str | None) -> Call[WebhookTest]:
    return Call(
        "POST",
        path("webhooks", webhook_id, "test"),
        lambda raw: WebhookTest.from_dict(obj(raw)),
        idempotency_key=idempotency_key,
    )


def _deliveries(webhook_id: str, status: str | None, limit: int | None) -> Listing[WebhookDelivery]:
    params = compact(status=status, limit=limit)
    return Listing(path("webhooks", webhook_id, "deliveries"), WebhookDelivery.from_dict, params)


def _delivery_get(webhook_id: str, delivery_id: str) -> Call[WebhookDelivery]:
    return Call("GET", path("webhooks", webhook_id, "deliveries", delivery_id), _delivery)


def _retry(webhook_id: str, delivery_id: str, idempotency_key: str | None) -> Call[WebhookDelivery]:
    where = path("webhooks", webhook_id, "deliveries", delivery_id, "retry")
    return Call("POST", where, _delivery, idempotency_key=idempotency_key)


class Deliveries(SyncResource):
    """What was sent to an endpoint (`client.webhooks.deliveries`), newest first."""

    def list(
        self,
        webhook_id: str,
        *,
        status: str | None = None,
        limit: int | None = None,
        cursor: Cursor | None = None,
    ) -> Page[WebhookDelivery]:
        return self._page(_deliveries(webhook_id, status, limit), cursor)

    def get(self, webhook_id: str, delivery_id: str) -> WebhookDelivery:
        return self._run(_delivery_get(webhook_id, delivery_id))

    def retry(
        self, webhook_id: str, delivery_id: str, *, idempotency_key: str | None = None
    ) -> WebhookDelivery:
        """Ask for the delivery to be sent again now; the answer is the delivery as it was."""
        return self._run(_retry(webhook_id, delivery_id, idempotency_key))


class Webhooks(SyncResource):
    """The organization's webhook endpoints (`client.webhooks`)."""

    def __init__(self, client: Runs) -> None:
        super().__init__(client)
        self.deliveries = Deliveries(client)

    def list(self) -> Page[WebhookEndpoint]:
        return self._page(_listing(), None)

    def create(
        self,
        *,
        url: str,
        events: Iterable[str],
        description: str | None = None,
        env: str | None = None,
        idempotency_key: str | None = None,
    ) -> WebhookEndpoint:
        """A new endpoint; its signing secret (`whsec_…`) is in `.secret` this once."""
        return self._run(_create(url, events, description, env, idempotency_key))

    def get(self, webhook_id: str) -> WebhookEndpoint:
        return self._run(_get(webhook_id))

    def update(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Iterable[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> WebhookEndpoint:
        return self._run(_update(webhook_id, url, events, description, enabled))

    def delete(self, webhook_id: str) -> WebhookEndpoint:
        return self._run(_delete(webhook_id))

    def rotate_secret(
        self, webhook_id: str, *, idempotency_key: str | None = None
    ) -> WebhookEndpoint:
        """A new secret in `.secret`; the previous one keeps signing for 24 hours."""
        return self._run(_rotate(webhook_id, idempotency_key))

    def test(self, webhook_id: str, *, idempotency_key: str | None = None) -> WebhookTest:
        """Ask for a `webhook.test` message to be sent to the endpoint."""
        return self._run(_test(webhook_id, idempotency_key))


class AsyncDeliveries(AsyncResource):
    """What was sent to an endpoint (`client.webhooks.deliveries`), newest first."""

    def list(
        self,
        webhook_id: str,
        *,
        status: str | None = None,
        limit: int | None = None,
        cursor: Cursor | None = None,
    ) -> AsyncPager[WebhookDelivery]:
        return self._pager(_deliveries(webhook_id, status, limit), cursor)

    async def get(self, webhook_id: str, delivery_id: str) -> WebhookDelivery:
        return await self._run(_delivery_get(webhook_id, delivery_id))

    async def retry(
        self, webhook_id: str, delivery_id: str, *, idempotency_key: str | None = None
    ) -> WebhookDelivery:
        return await self._run(_retry(webhook_id, delivery_id, idempotency_key))


class AsyncWebhooks(AsyncResource):
    """The organization's webhook endpoints (`client.webhooks`)."""

    def __init__(self, client: RunsAsync) -> None:
        super().__init__(client)
        self.deliveries = AsyncDeliveries(client)

    def list(self) -> AsyncPager[WebhookEndpoint]:
        return self._pager(_listing(), None)

    async def create(
        self,
        *,
        url: str,
        events: Iterable[str],
        description: str | None = None,
        env: str | None = None,
        idempotency_key: str | None = None,
    ) -> WebhookEndpoint:
        return await self._run(_create(url, events, description, env, idempotency_key))

    async def get(self, webhook_id: str) -> WebhookEndpoint:
        return await self._run(_get(webhook_id))

    async def update(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Iterable[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> WebhookEndpoint:
        return await self._run(_update(webhook_id, url, events, description, enabled))

    async def delete(self, webhook_id: str) -> WebhookEndpoint:
        return await self._run(_delete(webhook_id))

    async def rotate_secret(
        self, webhook_id: str, *, idempotency_key: str | None = None
    ) -> WebhookEndpoint:
        return await self._run(_rotate(webhook_id, idempotency_key))

    async def test(self, webhook_id: str, *, idempotency_key: str | None = None) -> WebhookTest:
        return await self._run(_test(webhook_id, idempotency_key))
