"""`/v1/webhooks`: the organization's webhook endpoints, managed with a key.

The rules and the access policy are `application.webhooks.Webhooks`'s, shared with the
dashboard and the CLI. An endpoint's signing secret (`whsec_…`) is in exactly two answers, the
endpoint's creation (201) and a rotation (200), both `Cache-Control: no-store`; nothing else
shows, logs or stores it. Deliveries are `api.routes.webhook_deliveries`'.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from api.errors import ApiError
from api.objects.webhooks import WebhookEndpoint, WebhookEndpointList, WebhookTest
from api.services import Services
from application.webhook_views import webhook_view
from application.webhooks import EndpointWithSecret, webhook_ref
from domain.access import Command
from domain.ids import format_webhook_id
from domain.key_format import Environment
from domain.webhook import MAX_DESCRIPTION, WebhookEventType
from projections.key_lookup import Principal

#: Enough for every event type named twice; the rest is the domain's to refuse.
MAX_EVENTS = 2 * len(WebhookEventType)
#: Answers that carry a secret are kept out of every cache.
NO_STORE = {"Cache-Control": "no-store"}
EVENTS_HELP = "Subscribe to at least one of: " + ", ".join(t.value for t in WebhookEventType)


class NewWebhook(msgspec.Struct, forbid_unknown_fields=True):
    # The URL's length and shape are judged by the domain (422 webhook_url_not_allowed).
    url: str
    events: Annotated[list[str], msgspec.Meta(max_length=MAX_EVENTS, description=EVENTS_HELP)]
    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)] = ""
    env: Literal["live", "test"] | None = None


class WebhookChange(msgspec.Struct, forbid_unknown_fields=True):
    url: str | None = None
    events: (
        Annotated[list[str], msgspec.Meta(max_length=MAX_EVENTS, description=EVENTS_HELP)] | None
    ) = None
    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)] | None = None
    enabled: bool | None = None


def _endpoint(view: dict[str, Any]) -> WebhookEndpoint:
    return msgspec.convert(view, WebhookEndpoint)


def _with_secret(new: EndpointWithSecret, status_code: int) -> Response[WebhookEndpoint]:
    """The endpoint object with its secret: the one answer that shows it, never cached."""
    shown = _endpoint(webhook_view(new.endpoint, secret=new.secret))
    return Response(shown, status_code=status_code, headers=NO_STORE)


class WebhooksController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]
    security = [{"BearerAuth": []}]

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        opt={"command": Command.MANAGE_WEBHOOKS},
        description=(
            "Add an endpoint in the key's environment (or `env`; a test key adds test "
            "endpoints only). The URL must be public HTTPS: loopback, private, link-local and "
            "metadata addresses, and hosts resolving to them, are refused with 422 "
            "`webhook_url_not_allowed`. Subscribing to `api_key.*` events needs api_keys:read. "
            "The response is the only time the signing secret (`whsec_…`) is shown."
        ),
    )
    async def create_webhook(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        data: JSONBody[NewWebhook],
    ) -> Response[WebhookEndpoint]:
        """Add a webhook endpoint; its secret is shown this once."""
        principal = request.user
        new = await asyncio.to_thread(
            services.webhooks.add,
            principal,
            principal.org_id,
            url=data.url,
            events=data.events,
            description=data.description,
            env=None if data.env is None else Environment(data.env),
        )
        return _with_secret(new, HTTP_201_CREATED)

    @get("/", opt={"command": Command.READ_WEBHOOKS})
    async def list_webhooks(
        self, request: Request[Principal, Any, Any], services: NamedDependency[Services]
    ) -> WebhookEndpointList:
        """The organization's endpoints the key may see, oldest first; never their secrets."""
        principal = request.user
        endpoints = await asyncio.to_thread(
            services.webhooks.endpoints, principal, principal.org_id
        )
        data = [_endpoint(webhook_view(e)) for e in endpoints]
        return WebhookEndpointList(data=data, next_cursor=None)

    @get("/{webhook_id:str}", opt={"command": Command.READ_WEBHOOKS})
    async def get_webhook(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        webhook_id: FromPath[str],
    ) -> WebhookEndpoint:
        """One endpoint (never its secret)."""
        endpoint = await asyncio.to_thread(
            services.webhooks.endpoint, request.user, webhook_ref(webhook_id)
        )
        return _endpoint(webhook_view(endpoint))

    @patch(
        "/{webhook_id:str}",
        opt={"command": Command.MANAGE_WEBHOOKS},
        description=(
            "Change any of `url`, `events`, `description`, and `enabled` (false stops "
            "deliveries, true resumes them); what is given is judged and saved together, or "
            "nothing is."
        ),
    )
    async def change_webhook(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        webhook_id: FromPath[str],
        data: JSONBody[WebhookChange],
    ) -> WebhookEndpoint:
        """Change an endpoint's URL, events, description or whether it is enabled."""
        if all(v is None for v in (data.url, data.events, data.description, data.enabled)):
            raise ApiError(
                422, "validation_error", "body: give url, events, description and/or enabled"
            )
        endpoint = await asyncio.to_thread(
            services.webhooks.change,
            request.user,
            webhook_ref(webhook_id),
            url=data.url,
            events=data.events,
            description=data.description,
            enabled=data.enabled,
        )
        return _endpoint(webhook_view(endpoint))

    @delete(
        "/{webhook_id:str}",
        status_code=HTTP_200_OK,
        opt={"command": Command.MANAGE_WEBHOOKS},
        description=(
            "Nothing more is sent to the endpoint and it is no longer listed; its history "
            "stays in the audit. Answers with the endpoint object and `deleted: true`."
        ),
    )
    async def delete_webhook(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        webhook_id: FromPath[str],
    ) -> WebhookEndpoint:
        """Delete an endpoint for good."""
        endpoint = await asyncio.to_thread(
            services.webhooks.delete, request.user, webhook_ref(webhook_id)
        )
        return _endpoint({**webhook_view(endpoint), "deleted": True})

    @post(
        "/{webhook_id:str}/rotate-secret",
        status_code=HTTP_200_OK,
        opt={"command": Command.MANAGE_WEBHOOKS},
        description=(
            "A new signing secret, shown this once. The previous one keeps signing beside it "
            "until `previous_secret_expires_at` (24 hours), so receivers can switch over."
        ),
    )
    async def rotate_secret(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        webhook_id: FromPath[str],
    ) -> Response[WebhookEndpoint]:
        """Rotate the endpoint's signing secret; the old one signs too for 24 hours."""
        new = await asyncio.to_thread(
            services.webhooks.rotate_secret, request.user, webhook_ref(webhook_id)
        )
        return _with_secret(new, HTTP_200_OK)

    @post(
        "/{webhook_id:str}/test",
        status_code=HTTP_202_ACCEPTED,
        opt={"command": Command.MANAGE_WEBHOOKS},
        description=(
            "Ask for a `webhook.test` event to be sent to this endpoint; the webhook worker "
            "sends it shortly, and it shows in the endpoint's deliveries."
        ),
    )
    async def test_webhook(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        webhook_id: FromPath[str],
    ) -> WebhookTest:
        """Send a test event to the endpoint (asynchronously)."""
        endpoint = await asyncio.to_thread(
            services.webhooks.request_test, request.user, webhook_ref(webhook_id)
        )
        return WebhookTest(webhook_id=format_webhook_id(endpoint.id))
