"""Settings > Webhooks: what its forms and links say, read, and what its pages show.

Form readers keep what was typed (a refused form is shown again as it was sent); the rules
are `application.webhooks`'s, which refuse with a `ValidationError`. Endpoints and deliveries
look as the API's objects say (`application.webhook_views`): ids and times are formatted there
once, and read here as typed values. Who may do what is the access policy's (`allows`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from api.dashboard.views import View, who
from application.webhook_views import webhook_view
from domain.errors import ValidationError
from domain.key_format import Environment
from domain.webhook import KEY_EVENTS, WebhookEndpoint, WebhookEventType
from projections.webhook_deliveries import Attempt, Delivery, DeliveryStatus
from projections.webhook_delivery_views import (
    attempt_view,
    delivery_view,
    parse_delivery_cursor,
)

#: Deliveries on one page of an endpoint's deliveries.
DELIVERY_PAGE_SIZE = 20
#: How long an endpoint's page refreshes its deliveries after a test or retry was asked for.
WATCH_SECONDS = 60
#: Every event type an endpoint can subscribe to, in the order the checkboxes show them.
EVENT_TYPES = tuple(t.value for t in WebhookEventType)


def _text(form: Any, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value if isinstance(value, str) else default


# -- forms -------------------------------------------------------------------------------------


class WebhookForm(msgspec.Struct, frozen=True, kw_only=True):
    """The add or edit form as sent (shown again with `error` when refused)."""

    url: str = ""
    description: str = ""
    env: str = Environment.LIVE.value
    events: tuple[str, ...] = ()
    error: str | None = None


def webhook_form(form: Any) -> WebhookForm:
    """The add or edit form's fields, as typed (judged by `application.webhooks`)."""
    events = tuple(e for e in form.getall("events", []) if isinstance(e, str))
    return WebhookForm(
        url=_text(form, "url").strip(),
        description=_text(form, "description"),
        env=_text(form, "env", Environment.LIVE.value),
        events=events[: 2 * len(EVENT_TYPES)],  # the rest is the domain's to refuse
    )


def environment(text: str) -> Environment:
    """The environment the add form chose."""
    try:
        return Environment(text)
    except ValueError:
        raise ValidationError("env: choose live or test") from None


def confirmed(form: Any) -> None:
    """Refuse a delete whose confirmation box was not ticked."""
    if _text(form, "confirm") != "yes":
        raise ValidationError("tick the box to confirm the endpoint is to be deleted")


def parse_cursor(text: str | None) -> tuple[float, str] | None:
    """The (created_at, id) a `before` link names; ValidationError for one we did not make."""
    if text is None:
        return None
    try:
        return parse_delivery_cursor(text)
    except ValueError:
        raise ValidationError("before: not a link from this page") from None


def watching(since: float | None, deliveries: Sequence[Delivery], now: float) -> bool:
    """Whether the deliveries refresh themselves: for a while after a test or retry was asked
    for (`since`), until some delivery has been tried since."""
    if since is None or not 0 <= now - since <= WATCH_SECONDS:
        return False
    return not any(d.last_attempt_at is not None and d.last_attempt_at >= since for d in deliveries)


# -- what the pages show -----------------------------------------------------------------------


class EndpointView(msgspec.Struct, frozen=True, kw_only=True):
    """One endpoint as the pages show it; never its secret."""

    id: str
    env: str
    url: str
    events: tuple[str, ...]
    description: str
    status: str
    disabled_reason: str | None
    created_at: datetime | None
    creator: str
    previous_secret_expires_at: datetime | None
    pending: int | None = None  # deliveries waiting (None: not read)
    failed: int | None = None  # deliveries given up on


class SecretReveal(msgspec.Struct, frozen=True, kw_only=True):
    """A signing secret shown once (endpoint added, secret rotated)."""

    title: str
    secret: str
    endpoint: EndpointView
    rotated: bool = False


class WebhooksPage(View, frozen=True, kw_only=True):
    """Settings > Webhooks: the organization's endpoints and the add form."""

    endpoints: tuple[EndpointView, ...]
    event_types: tuple[str, ...] = EVENT_TYPES
    may_manage: bool
    form: WebhookForm
    reveal: SecretReveal | None = None
    refresh_table: bool = False
    counts_unavailable: bool = False


class AttemptView(msgspec.Struct, frozen=True, kw_only=True):
    """One try at a delivery."""

    number: int
    at: datetime
    status_code: int | None
    duration_ms: float
    error: str | None
    response_excerpt: str


class DeliveryView(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery of an event to the endpoint, with its attempts, oldest first."""

    id: str
    event_type: str
    status: str
    attempt_count: int
    created_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    next_attempt_at: datetime | None
    payload: str | None  # pretty JSON; None: not for this reader
    attempts: tuple[AttemptView, ...]


class WebhookPage(View, frozen=True, kw_only=True):
    """One endpoint: details, the actions offered, its deliveries (newest first)."""

    endpoint: EndpointView
    event_types: tuple[str, ...] = EVENT_TYPES
    may_manage: bool
    form: WebhookForm
    reveal: SecretReveal | None = None
    deliveries: tuple[DeliveryView, ...] = ()
    deliveries_unavailable: bool = False
    paged: bool = False  # an older page (a link back to the newest)
    older: str | None = None  # the `before` link to older deliveries
    since: float | None = None
    watching: bool = False


def endpoint_view(
    endpoint: WebhookEndpoint,
    people: Mapping[str, str],
    counts: Mapping[str, int] | None = None,
) -> EndpointView:
    """An endpoint as the pages show it, from the API's endpoint object."""
    shown = webhook_view(endpoint)
    extra: dict[str, Any] = {"creator": who(endpoint.created_by, people)}
    if counts is not None:
        extra["pending"] = counts.get(DeliveryStatus.PENDING.value, 0)
        extra["failed"] = counts.get(DeliveryStatus.FAILED.value, 0)
    return msgspec.convert({**shown, **extra}, EndpointView)


def form_of(endpoint: WebhookEndpoint) -> WebhookForm:
    """The edit form filled with the endpoint's settings."""
    return WebhookForm(
        url=endpoint.url,
        description=endpoint.description,
        env=endpoint.env.value,
        events=tuple(sorted(endpoint.events)),
    )


def delivery_page_view(
    delivery: Delivery, attempts: Sequence[Attempt], *, may_read_keys: bool
) -> DeliveryView:
    """A delivery as the endpoint's page lists it; a key object's payload only for a reader
    who may read keys (as the API shows it)."""
    shown = delivery_view(delivery)
    payload = None
    if may_read_keys or delivery.event_type not in KEY_EVENTS:
        payload = msgspec.json.format(delivery.payload, indent=2).decode(errors="replace")
    return msgspec.convert(
        {
            **shown,
            "payload": payload,
            "attempts": [attempt_view(a) for a in attempts],
        },
        DeliveryView,
    )
