"""Settings > Webhooks: the organization's endpoints, adding one (its secret shown once), and
one endpoint's page: edit, enable or disable, rotate the secret, delete, send a test event,
and its deliveries with their attempts and a retry.

Handlers read the form (`webhook_forms`), run one `Webhooks` operation as the user's actor,
and render what `webhook_forms` builds. Each declares its command (`opt`), asked of the access
policy before any form is read: by `pages.acting_user`, and with the endpoint's facts by
`visible_endpoint`. A test or a retry is an event on the endpoint that the webhook worker acts
on within a second or so; the endpoint's page then refreshes its deliveries for a while.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from api.dashboard import webhook_forms as forms
from api.dashboard.context import DashboardContext
from api.dashboard.pages import USER_DEPENDENCY, declared_command, flash, is_htmx, page
from api.errors import STORE_ERRORS
from application.webhooks import EndpointWithSecret, facts, webhook_ref
from domain.access import Command, allows, authorize
from domain.actors import UserActor
from domain.errors import ValidationError
from domain.ids import format_webhook_id
from domain.user import User
from domain.webhook import WebhookEndpoint
from projections.webhook_delivery_views import delivery_cursor, endpoint_delivery

log = structlog.get_logger()

LIST_PATH = "/dashboard/webhooks"


async def visible_endpoint(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[DashboardContext],
    actor: NamedDependency[UserActor],
    webhook_id: FromPath[str],
) -> WebhookEndpoint:
    """The path's endpoint if the user may see it (its organization's), else not found; a
    change the handler declares is asked with the endpoint's facts, before any form is read."""
    endpoint = await asyncio.to_thread(
        dashboard.services.webhooks.endpoint, actor, webhook_ref(webhook_id)
    )
    if declared_command(request) is Command.MANAGE_WEBHOOKS:
        authorize(actor, Command.MANAGE_WEBHOOKS, webhook=facts(endpoint))
    return endpoint


def endpoint_path(endpoint: WebhookEndpoint, *, since: float | None = None) -> str:
    """The endpoint's page; with `since`, one that watches for deliveries tried from then."""
    path = f"{LIST_PATH}/{format_webhook_id(endpoint.id)}"
    return path if since is None else f"{path}?since={since:.3f}#deliveries"


class WebhookPages(Controller):
    path = "/webhooks"
    dependencies = {**USER_DEPENDENCY, "endpoint": Provide(visible_endpoint)}

    @get("/", opt={"command": Command.READ_WEBHOOKS})
    async def list_webhooks(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
    ) -> Template:
        """The organization's endpoints and, for those who may, the add form."""
        view = await asyncio.to_thread(_webhooks_page, dashboard, actor)
        return page(request, "webhooks.html.j2", view, user=user)

    @post("/", status_code=200, opt={"command": Command.MANAGE_WEBHOOKS})
    async def add_webhook(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
    ) -> Template:
        """Add an endpoint and show its signing secret, this once."""
        asked = forms.webhook_form(await request.form())
        htmx = is_htmx(request)

        def add() -> EndpointWithSecret:
            return dashboard.services.webhooks.add(
                actor,
                actor.org_id,
                url=asked.url,
                events=asked.events,
                description=asked.description,
                env=forms.environment(asked.env),
            )

        try:
            new = await asyncio.to_thread(add)
        except ValidationError as error:  # a refusal of the policy is the 403 page's
            refused = msgspec.structs.replace(asked, error=error.message)
            view = await asyncio.to_thread(_webhooks_page, dashboard, actor, form=refused)
            if not htmx:
                return page(request, "webhooks.html.j2", view, status_code=422, user=user)
            answer = page(request, "_webhook_add.html.j2", view, status_code=422, user=user)
            # The form comes back with its message and what was typed, in place of itself.
            answer.headers.update({"HX-Retarget": "#add", "HX-Reswap": "outerHTML"})
            return answer
        log.info("dashboard.webhook_added", webhook_id=format_webhook_id(new.endpoint.id))
        view = await asyncio.to_thread(
            _webhooks_page, dashboard, actor, reveal=new, refresh_table=htmx
        )
        template = "_webhook_reveal.html.j2" if htmx else "webhooks.html.j2"
        return page(request, template, view, user=user)

    @get("/{webhook_id:str}", opt={"command": Command.READ_WEBHOOKS})
    async def webhook_detail(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
        endpoint: NamedDependency[WebhookEndpoint],
        before: FromQuery[str | None] = None,
        since: FromQuery[float | None] = None,
    ) -> Template:
        """One endpoint: details, actions, its deliveries newest first (`before`: older ones);
        htmx asks for the deliveries alone while they refresh after a test or retry."""
        cursor = forms.parse_cursor(before)
        view = await asyncio.to_thread(
            _webhook_page, dashboard, actor, endpoint, before=cursor, since=since
        )
        if is_htmx(request):
            return page(request, "_webhook_deliveries.html.j2", view, user=user)
        return page(request, "webhook.html.j2", view, user=user)

    @post("/{webhook_id:str}/edit", status_code=200, opt={"command": Command.MANAGE_WEBHOOKS})
    async def edit_webhook(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
        endpoint: NamedDependency[WebhookEndpoint],
    ) -> Response[Any]:
        """Change the endpoint's URL, description and events, together or not at all."""
        asked = forms.webhook_form(await request.form())
        # An unchanged URL is not judged again (its host may resolve differently by now).
        url = None if asked.url == endpoint.url else asked.url

        def change() -> WebhookEndpoint:
            return dashboard.services.webhooks.change(
                actor, endpoint.id, url=url, events=asked.events, description=asked.description
            )

        try:
            await asyncio.to_thread(change)
        except ValidationError as error:
            refused = msgspec.structs.replace(asked, env=endpoint.env.value, error=error.message)
            view = await asyncio.to_thread(_webhook_page, dashboard, actor, endpoint, form=refused)
            return page(request, "webhook.html.j2", view, status_code=422, user=user)
        flash(request, "Saved the endpoint's settings.")
        return Redirect(endpoint_path(endpoint), status_code=303)

    @post("/{webhook_id:str}/enable", status_code=200, opt={"command": Command.MANAGE_WEBHOOKS})
    async def enable_webhook(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        actor: NamedDependency[UserActor],
        endpoint: NamedDependency[WebhookEndpoint],
    ) -> Redirect:
        """Deliver to the endpoint again."""
        await asyncio.to_thread(
            dashboard.services.webhooks.change, actor, endpoint.id, enabled=True
        )
        flash(request, "Enabled: events are delivered to this endpoint again.")
        return Redirect(endpoint_path(endpoint), status_code=303)

    @post("/{webhook_id:str}/disable", status_code=200, opt={"command": Command.MANAGE_WEBHOOKS})
    async def disable_webhook(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        actor: NamedDependency[UserActor],
        endpoint: NamedDependency[WebhookEndpoint],
    ) -> Redirect:
        """Stop delivering to the endpoint (until it is enabled again)."""
        webhooks = dashboard.services.webhooks
        await asyncio.to_thread(webhooks.change, actor, endpoint.id, enabled=False)
        flash(request, "Disabled: nothing is delivered to this endpoint until it is enabled.")
        return Redirect(endpoint_path(endpoint), status_code=303)

    @post("/{webhook_id:str}/rotate", status_code=200, opt={"command": Command.MANAGE_WEBHOOKS})
    async def rotate_secret(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
        endpoint: NamedDependency[WebhookEndpoint],
    ) -> Template:
        """A new signing secret (shown once); the old one keeps signing beside it for a day."""
        webhooks = dashboard.services.webhooks
        new = await asyncio.to_thread(webhooks.rotate_secret, actor, endpoint.id)
        log.info("dashboard.webhook_secret_rotated", webhook_id=format_webhook_id(endpoint.id))
        view = await asyncio.to_thread(_webhook_page, dashboard, actor, new.endpoint, reveal=new)
        template = "_webhook_reveal.html.j2" if is_htmx(request) else "webhook.html.j2"
        return page(request, template, view, user=user)

    @post("/{webhook_id:str}/delete", status_code=200, opt={"command": Command.MANAGE_WEBHOOKS})
    async def delete_webhook(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        actor: NamedDependency[UserActor],
        endpoint: NamedDependency[WebhookEndpoint],
    ) -> Redirect:
        """Delete the endpoint, once confirmed: nothing more is sent to it."""
        forms.confirmed(await request.form())
        await asyncio.to_thread(dashboard.services.webhooks.delete, actor, endpoint.id)
        log.info("dashboard.webhook_deleted", webhook_id=format_webhook_id(endpoint.id))
        flash(request, f"Deleted the endpoint {endpoint.url}. Nothing more is sent to it.")
        return Redirect(LIST_PATH, status_code=303)

    @post("/{webhook_id:str}/test", status_code=200, opt={"command": Command.MANAGE_WEBHOOKS})
    async def send_test(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        actor: NamedDependency[UserActor],
        endpoint: NamedDependency[WebhookEndpoint],
    ) -> Redirect:
        """Ask the webhook worker to send a `webhook.test` event to the endpoint."""
        asked_at = time.time()
        await asyncio.to_thread(dashboard.services.webhooks.request_test, actor, endpoint.id)
        flash(request, "A webhook.test event is on its way; it shows below in a moment.")
        return Redirect(endpoint_path(endpoint, since=asked_at), status_code=303)

    @post(
        "/{webhook_id:str}/deliveries/{delivery_id:str}/retry",
        status_code=200,
        opt={"command": Command.MANAGE_WEBHOOKS},
    )
    async def retry_delivery(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        actor: NamedDependency[UserActor],
        endpoint: NamedDependency[WebhookEndpoint],
        delivery_id: FromPath[str],
    ) -> Redirect:
        """Ask the webhook worker to send one of the endpoint's deliveries again now."""
        services = dashboard.services
        asked_at = time.time()

        def retry() -> None:
            found = endpoint_delivery(services.deliveries, endpoint.id, delivery_id)
            services.webhooks.request_retry(actor, endpoint.id, found.id)

        await asyncio.to_thread(retry)
        flash(request, f"Delivery {delivery_id} is being sent again; its attempt shows below.")
        return Redirect(endpoint_path(endpoint, since=asked_at), status_code=303)


def _webhooks_page(
    dashboard: DashboardContext,
    actor: UserActor,
    *,
    form: forms.WebhookForm | None = None,
    reveal: EndpointWithSecret | None = None,
    refresh_table: bool = False,
) -> forms.WebhooksPage:
    """Settings > Webhooks for `actor`, newest endpoint first, with a secret to `reveal`."""
    services = dashboard.services
    endpoints = services.webhooks.endpoints(actor, actor.org_id)
    people = dashboard.people({e.created_by for e in endpoints})
    counts, unavailable = _counts(dashboard, endpoints)
    shown = None
    if reveal is not None:
        added = forms.endpoint_view(reveal.endpoint, people)
        shown = forms.SecretReveal(
            title="Webhook endpoint added", secret=reveal.secret, endpoint=added
        )
    return forms.WebhooksPage(
        endpoints=tuple(
            forms.endpoint_view(e, people, counts.get(e.id) if counts is not None else None)
            for e in reversed(endpoints)
        ),
        may_manage=allows(actor, Command.MANAGE_WEBHOOKS, org_id=actor.org_id),
        form=form or forms.WebhookForm(),
        reveal=shown,
        refresh_table=refresh_table,
        counts_unavailable=unavailable,
    )


def _counts(
    dashboard: DashboardContext, endpoints: list[WebhookEndpoint]
) -> tuple[dict[Any, dict[str, int]] | None, bool]:
    """Each endpoint's deliveries per status; none, and logged, while the delivery log cannot
    answer (the endpoints still list). Also: whether it could not."""
    if not endpoints:
        return {}, False
    try:
        return dashboard.services.deliveries.counts([e.id for e in endpoints]), False
    except STORE_ERRORS as error:  # the log is unreachable; the endpoints still list
        log.warning("dashboard.webhook_deliveries_unavailable", error=type(error).__name__)
        return None, True


def _webhook_page(
    dashboard: DashboardContext,
    actor: UserActor,
    endpoint: WebhookEndpoint,
    *,
    form: forms.WebhookForm | None = None,
    reveal: EndpointWithSecret | None = None,
    before: tuple[float, str] | None = None,
    since: float | None = None,
) -> forms.WebhookPage:
    """One endpoint's page for `actor`: a page of its deliveries (older than `before`)."""
    delivery_log = dashboard.services.deliveries
    people = dashboard.people([endpoint.created_by])
    shown = forms.endpoint_view(endpoint, people)
    try:
        found = delivery_log.deliveries(
            endpoint.id, limit=forms.DELIVERY_PAGE_SIZE + 1, before=before
        )
        rows = found[: forms.DELIVERY_PAGE_SIZE]
        attempts = delivery_log.attempts([d.id for d in rows])
    except STORE_ERRORS as error:  # the log is unreachable; the endpoint still shows
        log.warning("dashboard.webhook_deliveries_unavailable", error=type(error).__name__)
        found, rows, attempts = [], [], {}
        unavailable = True
    else:
        unavailable = False
    may_read_keys = allows(actor, Command.READ_KEYS)
    secret = None
    if reveal is not None:
        secret = forms.SecretReveal(
            title="Signing secret rotated", secret=reveal.secret, endpoint=shown, rotated=True
        )
    return forms.WebhookPage(
        endpoint=shown,
        may_manage=allows(actor, Command.MANAGE_WEBHOOKS, webhook=facts(endpoint)),
        form=form or forms.form_of(endpoint),
        reveal=secret,
        deliveries=tuple(
            forms.delivery_page_view(d, attempts.get(d.id, []), may_read_keys=may_read_keys)
            for d in rows
        ),
        deliveries_unavailable=unavailable,
        paged=before is not None,
        older=delivery_cursor(rows[-1]) if len(found) > len(rows) else None,
        since=since,
        watching=before is None and forms.watching(since, rows, time.time()),
    )
