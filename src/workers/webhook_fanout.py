"""Turning what happened into webhook deliveries: one per endpoint that wants the event.

The webhook worker hands over each key-lifecycle message of the key stream, each key's first
429 of an hour from the request stream, and each expiry notice that falls due; this decides
which endpoints receive it and with what body, and writes the deliveries to the delivery log.
Everything here is idempotent: a delivery's id is derived from its source (the event's store
position, or the key and hour, or the key, expiry and notice) and its endpoint, so a message
handed over again enqueues nothing new. ADR 0023 tells the design.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError

from adapters.key_events import KeyEventMessage
from application.registry import KeyRegistry
from application.views import api_key_view, iso
from application.webhook_views import webhook_view
from application.webhooks import Webhooks
from domain.api_key import ApiKey
from domain.errors import NotFound, ValidationError
from domain.ids import parse_key_id, parse_org_id, parse_webhook_id
from domain.key_format import Environment
from domain.organization import Organization
from domain.webhook import TEST_EVENT, WebhookEndpoint, WebhookEventType
from domain.webhook_retries import RETRY_FOR
from projections.webhook_deliveries import DeliveryLog, ExpiryNotice, NewDelivery

_NAMESPACE = uuid.UUID("5b0f4a8e-2f44-4d0c-9a57-5d1f0f4f7a10")
_json = msgspec.json.Encoder()
#: `rate_limit.exceeded` is told at most once per key in this many seconds.
RATE_LIMIT_QUIET = 3600.0
#: When `api_key.expiring` is sent, before a key's expiry: (notice, how long before).
NOTICES = (("7d", timedelta(days=7)), ("1d", timedelta(days=1)))

#: Key stream types that are webhook events as they are (api_key.revoked may be an expiry).
_KEY_EVENT_TYPES = {
    "api_key.created": WebhookEventType.API_KEY_CREATED,
    "api_key.rolled": WebhookEventType.API_KEY_ROLLED,
    "api_key.revoked": WebhookEventType.API_KEY_REVOKED,
    "api_key.exposed": WebhookEventType.API_KEY_EXPOSED,
    # The lifetime sweep's warning: the key object says when (`unused_revocation_at`).
    "api_key.unused_warning": WebhookEventType.API_KEY_UNUSED,
}


def message_id(source: str) -> str:
    """The Standard Webhooks `webhook-id` of the event from `source` (every endpoint's)."""
    return "msg_" + uuid.uuid5(_NAMESPACE, source).hex


def delivery_id(source: str, endpoint_id: UUID) -> str:
    """The id of the delivery of the event from `source` to one endpoint."""
    return "whd_" + uuid.uuid5(_NAMESPACE, f"{source}/{endpoint_id.hex}").hex


def notices_due(expires_at: datetime, now: datetime) -> list[tuple[str, float]]:
    """The expiry notices of a key expiring at `expires_at`, as (kind, due time): a notice
    already past is sent now, unless a later one is also due (only the nearer is useful)."""
    due = [(kind, (expires_at - before).timestamp()) for kind, before in NOTICES]
    if expires_at <= now:
        return []
    passed = [n for n in due if n[1] <= now.timestamp()]
    ahead = [n for n in due if n[1] > now.timestamp()]
    return ([passed[-1]] if passed else []) + ahead


@dataclass(frozen=True, slots=True)
class Told:
    """What a 429 led to: deliveries enqueued, and when the key was last told (None: no
    endpoint listens for it)."""

    enqueued: int
    last_told: float | None


class WebhookFanout:
    """Decides who receives what, and records it in the delivery log."""

    def __init__(self, registry: KeyRegistry, webhooks: Webhooks, log: DeliveryLog) -> None:
        self.registry = registry
        self.webhooks = webhooks
        self.log = log

    # -- the key stream --------------------------------------------------------------------

    def on_key_event(self, message: KeyEventMessage) -> int:
        """Handle one message of the key stream; the number of deliveries newly enqueued."""
        kind = message.type
        if kind.startswith("webhook."):
            return self._on_webhook_event(message)
        if kind not in _KEY_EVENT_TYPES:
            return 0
        try:
            key_id, org_id = parse_key_id(message.aggregate_id), parse_org_id(message.org_id)
        except ValidationError:  # not the relay's: nothing to tell
            return 0
        self._track_expiry(key_id, org_id, message)
        org, listening = self._listening(org_id, message.occurred_at)
        if not listening:
            return 0  # nobody to tell: the key need not even be read
        try:
            key = self._key_at(key_id, message.aggregate_version)
        except NotFound:
            return 0
        event_type = _KEY_EVENT_TYPES[kind]
        if kind == "api_key.revoked" and key.expiry_cause is not None:
            event_type = WebhookEventType.API_KEY_EXPIRED
        data = self._key_object(key, message.occurred_at, org)
        return self._fan_out(
            f"keys/{message.position}",
            key.org_id,
            key.env,
            event_type,
            data,
            message.occurred_at,
            among=listening,
        )

    def _listening(
        self, org_id: UUID, occurred_at: datetime
    ) -> tuple[Organization | None, list[WebhookEndpoint]]:
        """The org, and its endpoints that could receive an event at `occurred_at` (enabled,
        and added before it)."""
        try:
            org = self.registry.get_organization(org_id)
        except NotFound:
            return None, []
        return org, [
            e
            for e in self.webhooks.live_endpoints(org)
            if e.enabled and e.created_on <= occurred_at  # a deleted one is never enabled
        ]

    def _key_at(self, key_id: UUID, version: int) -> ApiKey:
        """The key as the event left it (later changes are later events' news)."""
        try:
            key: object = self.registry.repository.get(key_id, version=version)
        except AggregateNotFoundError:  # not in this store: nothing to tell
            # (Any other error, the store away, is raised: the fetch is tried again.)
            raise NotFound("no such API key") from None
        if not isinstance(key, ApiKey):
            raise NotFound("no such API key")
        return key

    def _track_expiry(self, key_id: UUID, org_id: UUID, message: KeyEventMessage) -> None:
        """Schedule (or cancel) the key's `api_key.expiring` notices, whoever listens now (an
        endpoint added later still hears of the keys that expire after it was added)."""
        if message.type == "api_key.created":
            expires_text = message.data.get("expires_at")
            if not expires_text:
                return
            expires_at = datetime.fromisoformat(str(expires_text))
            due = notices_due(expires_at, self.registry.clock())
            if due:
                self.log.schedule_notices(key_id, org_id, expires_at.timestamp(), due)
        elif message.type in ("api_key.rolled", "api_key.revoked"):
            # A rolled key's end is its grace, chosen by whoever rolled it: no reminders.
            self.log.cancel_notices(key_id)

    def _on_webhook_event(self, message: KeyEventMessage) -> int:
        try:
            webhook_id = parse_webhook_id(message.aggregate_id)
        except ValidationError:  # not the relay's: nothing to tell
            return 0
        if message.type == "webhook.enabled":
            self.log.forget_endpoint_health(webhook_id)
        elif message.type == "webhook.retry_requested":
            delivery = self.log.get(str(message.data.get("delivery_id", "")))
            if delivery is not None and delivery.endpoint_id == webhook_id:
                now = self.registry.clock().timestamp()
                self.log.retry(delivery.id, now, give_up_at=now + RETRY_FOR.total_seconds())
        elif message.type == "webhook.test_requested":
            return self._send_test(webhook_id, message)
        elif message.type == "webhook.disabled":
            return self._tell_disabled(webhook_id, message)
        return 0

    def _send_test(self, webhook_id: UUID, message: KeyEventMessage) -> int:
        try:
            endpoint = self.webhooks.get(webhook_id)
        except NotFound:
            return 0
        data = {
            "webhook_id": message.aggregate_id,
            "message": "A test event from Icodrip Keys: this endpoint receives webhooks.",
            "requested_by": message.actor,
        }
        source = f"keys/{message.position}"
        body = self._body(TEST_EVENT, data, message.occurred_at)
        return self._enqueue(source, [endpoint], TEST_EVENT, body, message.occurred_at)

    def _tell_disabled(self, webhook_id: UUID, message: KeyEventMessage) -> int:
        try:
            disabled: object = self.registry.repository.get(
                webhook_id, version=message.aggregate_version
            )
        except AggregateNotFoundError:  # not in this store: nothing to tell
            return 0
        if not isinstance(disabled, WebhookEndpoint):
            return 0
        data = webhook_view(disabled)
        return self._fan_out(
            f"keys/{message.position}",
            disabled.org_id,
            disabled.env,
            WebhookEventType.WEBHOOK_DISABLED,
            data,
            message.occurred_at,
            leave_out=webhook_id,
        )

    # -- rate limits and expiry notices ----------------------------------------------------

    def on_rate_limited(self, org_text: str, key_text: str, at: float, event_id: str) -> Told:
        """A key was answered 429 at `at` (request `event_id`): tell its org's endpoints,
        unless they were told of this key less than an hour before."""
        try:
            key = self.registry.get_key(parse_key_id(key_text))
            org_id = parse_org_id(org_text)
        except (NotFound, ValidationError):  # not a key of ours (a forged event): nothing
            return Told(0, None)
        occurred = datetime.fromtimestamp(at, UTC)
        org, endpoints = self._listening(org_id, occurred)
        listening = [
            e
            for e in endpoints
            if e.env == key.env and e.wants(WebhookEventType.RATE_LIMIT_EXCEEDED)
        ]
        if key.org_id != org_id or not listening:
            return Told(0, None)
        last = self.log.last_told(key.id)
        if last is not None and abs(at - last) < RATE_LIMIT_QUIET:
            return Told(0, last)
        enqueued = self._fan_out(
            # The first 429 of the quiet period names the event: a fetch handed over again
            # (before `set_told`) enqueues the same deliveries, which are then skipped.
            f"rate_limit/{key.id.hex}/{event_id}",
            key.org_id,
            key.env,
            WebhookEventType.RATE_LIMIT_EXCEEDED,
            self._key_object(key, occurred, org),
            occurred,
            among=listening,
        )
        self.log.set_told(key.id, at)
        return Told(enqueued, at)

    def send_due_notices(self, now: float, limit: int = 500) -> int:
        """Send the expiry notices that fell due; the number of deliveries enqueued."""
        sent = 0
        for notice in self.log.due_notices(now, limit):
            sent += self._notify_expiring(notice)
            self.log.drop_notice(notice)
        return sent

    def _notify_expiring(self, notice: ExpiryNotice) -> int:
        try:
            key = self.registry.get_key(notice.key_id)
        except NotFound:
            return 0
        if (
            key.is_revoked
            or key.successor_id is not None
            or key.expires_at is None
            or abs(key.expires_at.timestamp() - notice.expires_at) > 0.001
        ):
            return 0  # retired or rolled since: the notice is moot
        now = self.registry.clock()
        return self._fan_out(
            f"expiring/{key.id.hex}/{notice.expires_at}/{notice.kind}",
            key.org_id,
            key.env,
            WebhookEventType.API_KEY_EXPIRING,
            self._key_object(key, now),
            now,
        )

    # -- fan-out -------------------------------------------------------------------------

    def _key_object(
        self, key: ApiKey, at: datetime, org: Organization | None = None
    ) -> dict[str, Any]:
        if org is None or org.id != key.org_id:
            org = self.registry.get_organization(key.org_id)
        return api_key_view(key, org, at)

    def _fan_out(
        self,
        source: str,
        org_id: UUID,
        env: Environment,
        event_type: WebhookEventType,
        data: dict[str, Any],
        occurred_at: datetime,
        *,
        leave_out: UUID | None = None,
        among: list[WebhookEndpoint] | None = None,
    ) -> int:
        """Enqueue the event for the org's endpoints that want it (of `among`, when the
        caller has read them already)."""
        if among is None:
            among = self.webhooks.live_endpoints(self.registry.get_organization(org_id))
        endpoints = [
            e
            for e in among
            if e.wants(event_type)
            and e.env == env
            and e.id != leave_out
            # An endpoint added after the event is not told of it (a late worker's news).
            and e.created_on <= occurred_at
        ]
        if not endpoints:
            return 0
        body = self._body(event_type, data, occurred_at)
        return self._enqueue(source, endpoints, event_type, body, occurred_at)

    @staticmethod
    def _body(event_type: str, data: dict[str, Any], occurred_at: datetime) -> bytes:
        return _json.encode({"type": event_type, "timestamp": iso(occurred_at), "data": data})

    def _enqueue(
        self,
        source: str,
        endpoints: Iterable[WebhookEndpoint],
        event_type: str,
        body: bytes,
        occurred_at: datetime,
    ) -> int:
        now = self.registry.clock().timestamp()
        msg = message_id(source)
        return self.log.enqueue(
            [
                NewDelivery(
                    id=delivery_id(source, e.id),
                    endpoint_id=e.id,
                    org_id=e.org_id,
                    msg_id=msg,
                    event_type=event_type,
                    payload=body,
                    # Events of one endpoint go out in the order they happened.
                    created_at=occurred_at.timestamp(),
                    next_attempt_at=now,
                    give_up_at=now + RETRY_FOR.total_seconds(),
                )
                for e in endpoints
            ]
        )
