"""WebhookEndpoint: where an organization is told what happens to its keys.

An endpoint is event-sourced like a key, so its history (who added it, changed it, rotated its
secret, asked for a test or a retry) is the audit's. Its signing secret is never stored: events
hold a random salt, and the secret is derived from the salt and the service's pepper where a
delivery is signed (`domain.webhook_signing`, ADR 0023). A rotated secret keeps signing beside
the new one for `SECRET_OVERLAP`, so receivers can switch without missing a delivery.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor
from domain.errors import NotFound, ValidationError
from domain.key_format import Environment
from domain.webhook_signing import derive_secret, new_salt


class WebhookEventType(StrEnum):
    """What an endpoint can subscribe to."""

    API_KEY_CREATED = "api_key.created"
    API_KEY_ROLLED = "api_key.rolled"
    API_KEY_REVOKED = "api_key.revoked"
    API_KEY_EXPIRING = "api_key.expiring"
    API_KEY_EXPIRED = "api_key.expired"
    API_KEY_EXPOSED = "api_key.exposed"
    API_KEY_UNUSED = "api_key.unused"
    RATE_LIMIT_EXCEEDED = "rate_limit.exceeded"
    WEBHOOK_DISABLED = "webhook.disabled"


#: Sent to one endpoint when someone asks for a test; nobody subscribes to it.
TEST_EVENT = "webhook.test"
#: Event types whose payload is a key object: subscribing needs the right to read keys.
KEY_EVENTS = frozenset(WebhookEventType) - {WebhookEventType.WEBHOOK_DISABLED}
#: How long a rotated-out secret keeps signing beside the new one.
SECRET_OVERLAP = timedelta(hours=24)
MAX_DESCRIPTION = 500
#: Endpoints an organization may have at once (deleted ones do not count).
MAX_ENDPOINTS_PER_ORG = 20


def parse_event_types(values: list[str] | tuple[str, ...]) -> tuple[WebhookEventType, ...]:
    """The event types named in `values` (sorted, unique), or ValidationError naming the
    unknown one; at least one is needed."""
    chosen = set()
    for value in values:
        try:
            chosen.add(WebhookEventType(value))
        except ValueError:
            valid = ", ".join(t.value for t in WebhookEventType)
            raise ValidationError(
                f"unknown webhook event {str(value)[:60]!r}: expected some of {valid}"
            ) from None
    if not chosen:
        raise ValidationError("events: choose at least one event type")
    return tuple(sorted(chosen))


def clean_description(text: str) -> str:
    """A description, trimmed; ValidationError when too long."""
    text = text.strip()
    if len(text) > MAX_DESCRIPTION:
        raise ValidationError(f"description: at most {MAX_DESCRIPTION} characters")
    return text


class WebhookEndpoint(Aggregate):
    """A URL of an organization that receives the events it subscribed to, signed."""

    class Created(Aggregate.Created):
        org_id: UUID
        env: Environment
        url: str
        events: list[str]
        description: str
        salt: str
        actor: str

    class Changed(Aggregate.Event):
        org_id: UUID
        url: str | None
        events: list[str] | None
        description: str | None
        actor: str

    class SecretRotated(Aggregate.Event):
        org_id: UUID
        salt: str
        previous_until: datetime
        actor: str

    class Disabled(Aggregate.Event):
        org_id: UUID
        reason: str
        actor: str

    class Enabled(Aggregate.Event):
        org_id: UUID
        actor: str

    class Deleted(Aggregate.Event):
        org_id: UUID
        actor: str

    class TestRequested(Aggregate.Event):
        org_id: UUID
        actor: str

    class RetryRequested(Aggregate.Event):
        org_id: UUID
        delivery_id: str
        actor: str

    @event(Created)
    def __init__(
        self,
        org_id: UUID,
        env: Environment,
        url: str,
        events: list[str],
        description: str,
        salt: str,
        actor: str,
    ) -> None:
        self.org_id = org_id
        self._env = Environment(env)
        self.url = url
        self.events = list(events)
        self.description = description
        self.salt = salt
        # Rotated-out salts with the time each stops signing (several after quick rotations).
        self.retired_salts: list[tuple[str, datetime]] = []
        self.enabled = True
        self.disabled_reason = ""
        self.deleted = False
        self.created_by = actor

    @classmethod
    def add(
        cls,
        org_id: UUID,
        *,
        env: Environment,
        url: str,
        events: tuple[WebhookEventType, ...],
        description: str,
        actor: Actor,
    ) -> WebhookEndpoint:
        """A new endpoint; `url` was checked by the caller (`domain.webhook_urls`)."""
        return cls(
            org_id=org_id,
            env=Environment(env),
            url=url,
            events=[e.value for e in events],
            description=clean_description(description),
            salt=new_salt(),
            actor=actor.name,
        )

    @property
    def env(self) -> Environment:
        return Environment(self._env)

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self.events)

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint is to receive an event of `event_type` now."""
        return self.enabled and not self.deleted and event_type in self.event_types

    def secrets(self, pepper: bytes, now: datetime) -> list[str]:
        """The secrets that sign a delivery now: the current one, then the rotated-out ones
        still within their overlap (newest first)."""
        current = [derive_secret(pepper, self.id, self.salt)]
        for salt, until in reversed(self.retired_salts):
            if now < until:
                current.append(derive_secret(pepper, self.id, salt))
        return current

    @property
    def previous_until(self) -> datetime | None:
        """When the last rotated-out secret stops signing (None: never rotated)."""
        return max((until for _, until in self.retired_salts), default=None)

    def _alive(self) -> None:
        if self.deleted:
            raise NotFound("no such webhook endpoint")

    def change(
        self,
        actor: Actor,
        *,
        url: str | None = None,
        events: tuple[WebhookEventType, ...] | None = None,
        description: str | None = None,
    ) -> bool:
        """Change what was given (a no-op when nothing differs); True when changed."""
        self._alive()
        new_events = None if events is None else [e.value for e in events]
        new_description = None if description is None else clean_description(description)
        if url == self.url:
            url = None
        if new_events is not None and sorted(new_events) == sorted(self.events):
            new_events = None
        if new_description == self.description:
            new_description = None
        if url is None and new_events is None and new_description is None:
            return False
        self._changed(
            org_id=self.org_id,
            url=url,
            events=new_events,
            description=new_description,
            actor=actor.name,
        )
        return True

    @event(Changed)
    def _changed(
        self,
        org_id: UUID,
        url: str | None,
        events: list[str] | None,
        description: str | None,
        actor: str,
    ) -> None:
        if url is not None:
            self.url = url
        if events is not None:
            self.events = list(events)
        if description is not None:
            self.description = description

    def rotate_secret(self, actor: Actor, now: datetime) -> None:
        """A new secret; the current one keeps signing beside it for `SECRET_OVERLAP`."""
        self._alive()
        self._secret_rotated(
            org_id=self.org_id,
            salt=new_salt(),
            previous_until=now + SECRET_OVERLAP,
            actor=actor.name,
        )

    @event(SecretRotated)
    def _secret_rotated(
        self, org_id: UUID, salt: str, previous_until: datetime, actor: str
    ) -> None:
        # A second rotation within the overlap keeps the first secret signing too, until its
        # own end: a receiver still on it misses nothing.
        still = [(s, u) for s, u in self.retired_salts if u > previous_until - SECRET_OVERLAP]
        self.retired_salts = [*still, (self.salt, previous_until)]
        self.salt = salt

    def disable(self, actor: Actor, reason: str) -> bool:
        """Stop deliveries (by a person, or the system after days of failures); True when
        it was enabled."""
        self._alive()
        if not self.enabled:
            return False
        self._disabled(org_id=self.org_id, reason=reason[:500], actor=actor.name)
        return True

    @event(Disabled)
    def _disabled(self, org_id: UUID, reason: str, actor: str) -> None:
        self.enabled = False
        self.disabled_reason = reason

    def enable(self, actor: Actor) -> bool:
        """Deliver again; True when it was disabled."""
        self._alive()
        if self.enabled:
            return False
        self._enabled(org_id=self.org_id, actor=actor.name)
        return True

    @event(Enabled)
    def _enabled(self, org_id: UUID, actor: str) -> None:
        self.enabled = True
        self.disabled_reason = ""

    def delete(self, actor: Actor) -> None:
        """Remove the endpoint for good (its history stays)."""
        self._alive()
        self._deleted(org_id=self.org_id, actor=actor.name)

    @event(Deleted)
    def _deleted(self, org_id: UUID, actor: str) -> None:
        self.deleted = True
        self.enabled = False

    def request_test(self, actor: Actor) -> None:
        """Ask for a `webhook.test` delivery to this endpoint (the worker sends it)."""
        self._alive()
        self._test_requested(org_id=self.org_id, actor=actor.name)

    @event(TestRequested)
    def _test_requested(self, org_id: UUID, actor: str) -> None:
        pass

    def request_retry(self, delivery_id: str, actor: Actor) -> None:
        """Ask for one of this endpoint's deliveries to be sent again now."""
        self._alive()
        self._retry_requested(org_id=self.org_id, delivery_id=delivery_id, actor=actor.name)

    @event(RetryRequested)
    def _retry_requested(self, org_id: UUID, delivery_id: str, actor: str) -> None:
        pass
