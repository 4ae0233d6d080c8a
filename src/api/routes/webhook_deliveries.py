"""`/v1/webhooks/{id}/deliveries`: what was sent to an endpoint, each try, and retrying one.

Read from the delivery log (`projections.webhook_deliveries.DeliveryLog`) after the access
policy has let the key see the endpoint (`Webhooks.endpoint`): a delivery is found only through
its own endpoint. Pages are newest first, keyed on (created_at, id) in an opaque cursor. A retry
is asked for as an event on the endpoint (`webhook.retry_requested`), which the webhook worker
acts on; the answer is the delivery as it stands when asked.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from api.errors import ApiError
from api.objects.webhooks import WebhookDelivery, WebhookDeliveryList
from api.services import Services
from application.webhooks import webhook_ref
from domain.access import Command, allows
from domain.webhook import KEY_EVENTS
from projections.key_lookup import Principal
from projections.webhook_deliveries import Attempt, Delivery, DeliveryStatus
from projections.webhook_delivery_views import (
    delivery_cursor,
    delivery_view,
    endpoint_delivery,
    parse_delivery_cursor,
)

STATUSES = ", ".join(s.value for s in DeliveryStatus)


def decode_cursor(text: str) -> tuple[float, str]:
    """The (created_at, id) a `next_cursor` names; 422 for anything else."""
    try:
        return parse_delivery_cursor(text)
    except ValueError:
        raise ApiError(422, "validation_error", "cursor: not a cursor from this API") from None


def parse_status(text: str | None) -> DeliveryStatus | None:
    if text is None:
        return None
    try:
        return DeliveryStatus(text)
    except ValueError:
        raise ApiError(422, "validation_error", f"status: expected one of {STATUSES}") from None


def view(
    principal: Principal, delivery: Delivery, attempts: list[Attempt] | None
) -> WebhookDelivery:
    """The delivery object; an `api_key.*` payload (a key object) only for a key that may read
    keys, as subscribing to such events needs api_keys:read too."""
    shown = delivery_view(delivery, attempts)
    if delivery.event_type in KEY_EVENTS and not allows(principal, Command.READ_KEYS):
        shown["payload"] = None
    return msgspec.convert(shown, WebhookDelivery)


class WebhookDeliveriesController(Controller):
    path = "/v1/webhooks/{webhook_id:str}/deliveries"
    tags = ["webhooks"]
    security = [{"BearerAuth": []}]

    @get(
        "/",
        opt={"command": Command.READ_WEBHOOKS},
        description=(
            "Newest first, each with its attempts (time, response status and duration, an "
            "excerpt of the response) and, while pending, `next_attempt_at`. Filter with "
            f"`status` ({STATUSES}); page with `limit` and `cursor=next_cursor`."
        ),
    )
    async def list_deliveries(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        webhook_id: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        cursor: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
    ) -> WebhookDeliveryList:
        """The endpoint's deliveries, newest first."""
        principal = request.user
        endpoint_id = webhook_ref(webhook_id)
        before = None if cursor is None else decode_cursor(cursor)
        wanted = parse_status(status)

        def read() -> WebhookDeliveryList:
            endpoint = services.webhooks.endpoint(principal, endpoint_id)
            rows = services.deliveries.deliveries(
                endpoint.id, limit=limit + 1, before=before, status=wanted
            )
            page = rows[:limit]
            attempts = services.deliveries.attempts([d.id for d in page])
            return WebhookDeliveryList(
                data=[view(principal, d, attempts.get(d.id, [])) for d in page],
                next_cursor=delivery_cursor(page[-1]) if len(rows) > limit else None,
            )

        return await asyncio.to_thread(read)

    @get("/{delivery_id:str}", opt={"command": Command.READ_WEBHOOKS})
    async def get_delivery(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        webhook_id: FromPath[str],
        delivery_id: FromPath[str],
    ) -> WebhookDelivery:
        """One delivery of the endpoint, with its attempts."""
        principal = request.user
        endpoint_id = webhook_ref(webhook_id)

        def read() -> WebhookDelivery:
            endpoint = services.webhooks.endpoint(principal, endpoint_id)
            delivery = endpoint_delivery(services.deliveries, endpoint.id, delivery_id)
            attempts = services.deliveries.attempts([delivery.id])
            return view(principal, delivery, attempts.get(delivery.id, []))

        return await asyncio.to_thread(read)

    @post(
        "/{delivery_id:str}/retry",
        status_code=HTTP_202_ACCEPTED,
        opt={"command": Command.MANAGE_WEBHOOKS},
        description=(
            "Ask for the delivery to be sent again now, whatever its status; the webhook "
            "worker sends it shortly. Answers with the delivery as it is when asked."
        ),
    )
    async def retry_delivery(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        webhook_id: FromPath[str],
        delivery_id: FromPath[str],
    ) -> WebhookDelivery:
        """Send one of the endpoint's deliveries again."""
        principal = request.user
        endpoint_id = webhook_ref(webhook_id)

        def retry() -> WebhookDelivery:
            endpoint = services.webhooks.endpoint(principal, endpoint_id)
            delivery = endpoint_delivery(services.deliveries, endpoint.id, delivery_id)
            services.webhooks.request_retry(principal, endpoint.id, delivery.id)
            attempts = services.deliveries.attempts([delivery.id])
            return view(principal, delivery, attempts.get(delivery.id, []))

        return await asyncio.to_thread(retry)
