"""History from the event store: a key's lifecycle, the org's event feed, keys as of an instant.

Everything here is computed from stored events (no read model), so it is as trustworthy as
the store itself. Events are shown in their public shape only: the allow-list of
`adapters.key_events` (the same fields the relay puts on the bus), never a key's hash.

- `key_history`: every lifecycle event of one key, oldest first, with what it changed.
- `org_events`: the org's events after a position of the notification log, in log order; the
  same request always gives the same events in the same order (the log is append-only and its
  positions never change). Pages of the log are read in turn and filtered on the aggregate id
  before anything is decoded, so other orgs' events cost a row read, not a deserialization.
- `keys_as_of`: the org's keys as they were at an instant, by folding each key's (and the
  org's) events up to that instant, rendered like the live key object at `now = instant`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec

from adapters.key_events import to_message
from application.registry import KeyRegistry
from application.views import api_key_view, iso
from domain.access import Command, KeyFacts, authorize, visible_envs
from domain.actors import Actor
from domain.api_key import ApiKey
from domain.errors import NotFound, ValidationError
from domain.ids import format_key_id
from domain.key_format import Environment
from domain.organization import Organization
from domain.webhook import WebhookEndpoint

#: Notifications read per query of the log.
PAGE_SIZE = 1000
#: Notifications one feed request reads at most before it answers (with a cursor to go on).
MAX_SCAN = 100_000
MAX_FEED_LIMIT = 1000
#: A key's Created event precedes its org's KeyAdded within one transaction; this margin lets
#: `keys_as_of` skip reading keys added well after the instant.
_ADDED_MARGIN = timedelta(minutes=5)
#: How far in the future `as_of` may be (clock skew between a client and us).
AS_OF_SKEW = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of the org's event feed."""

    events: list[dict[str, Any]]
    next_position: int | None
    """Pass as `after` to continue at once; None when the log's head was reached."""
    scanned_to: int
    """The last log position examined (events up to it were all considered)."""


def parse_moment(text: str) -> datetime:
    """An RFC 3339 date-time with a time zone, or ValidationError saying what is wrong."""
    candidate = text.strip()
    # A `+` left unencoded in a query string arrives as a space: `…10:00:00 01:00`.
    candidate = re.sub(r" (\d\d:?\d\d)$", r"+\1", candidate)
    if not re.match(r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$", candidate):
        raise ValidationError(
            f"as_of: {text[:60]!r} is not an RFC 3339 time such as 2026-03-01T12:00:00Z"
        )
    try:
        moment = datetime.fromisoformat(candidate.upper().replace(" ", "T"))
    except ValueError:
        raise ValidationError(f"as_of: {text[:60]!r} is not a valid date and time") from None
    return moment


def event_view(event: Any, position: int | None) -> dict[str, Any]:
    """The public shape of a stored lifecycle event (the bus's message, plus `object`)."""
    document: dict[str, Any] = {"object": "event"}
    document.update(msgspec.to_builtins(to_message(position or 0, event)))
    if position is None:
        del document["position"]
    for name in document["data"]:
        original = getattr(event, name, None)
        if isinstance(original, datetime):
            document["data"][name] = iso(original)
    document["occurred_at"] = iso(event.timestamp)
    return document


def _key_state(key: ApiKey, at: datetime) -> dict[str, Any]:
    """The public attributes of a key that its events change."""
    return {
        "name": key.name,
        "env": key.env.value,
        "type": key.type.value,
        "hint": key.hint,
        "status": key.status_at(at),
        "permissions": None
        if key.permissions is None
        else sorted(p.value for p in key.permissions),
        "allowed_origins": list(key.allowed_origins),
        "allowed_ips": list(key.allowed_ips),
        "exposed_at": iso(key.exposed_at),
        "exposure": list(key.exposures),
        "expires_at": iso(key.expires_at),
        "rolled_from": None if key.predecessor_id is None else format_key_id(key.predecessor_id),
        "rolled_to": None if key.successor_id is None else format_key_id(key.successor_id),
        "revoked_at": iso(key.revoked_at),
        "revoked_by": key.revoked_by,
        "revocation_reason": key.revocation_reason,
    }


def _fold(events: Iterable[Any], until: datetime | None = None) -> Any:
    """The aggregate after `events` (only the prefix recorded at or before `until`)."""
    aggregate: Any = None
    for event in events:
        if until is not None and event.timestamp > until:
            break
        aggregate = event.mutate(aggregate)
    return aggregate


class History:
    """Read-only questions about the past asked by `actor`, answered from the event store.

    Every answer is what the access policy lets the actor see: its organization's, and test
    mode's only for a test key.
    """

    def __init__(
        self,
        registry: KeyRegistry,
        actor: Actor,
        *,
        page_size: int = PAGE_SIZE,
        max_scan: int = MAX_SCAN,
    ) -> None:
        self.registry = registry
        self.actor = actor
        self.page_size = page_size
        self.max_scan = max_scan

    def _events(self, aggregate_id: UUID) -> list[Any]:
        stored = self.registry.recorder.select_events(aggregate_id)
        return [self.registry.mapper.to_domain_event(s) for s in stored]

    # -- one key -------------------------------------------------------------------------

    def key_history(self, key_id: UUID) -> list[dict[str, Any]]:
        """Every lifecycle event of the key, oldest first, each with what it changed.

        A key the actor may not see (another organization's) is not found, never forbidden.
        """
        events = self._events(key_id)
        if not events or not isinstance(events[0], ApiKey.Created):
            raise NotFound("no such API key")
        now = _fold(events)
        org = self.registry.get_organization(now.org_id)
        authorize(self.actor, Command.READ_KEYS, key=KeyFacts.of(now, org))
        entries: list[dict[str, Any]] = []
        key: Any = None
        before: dict[str, Any] = {}
        for event in events:
            key = event.mutate(key)
            after = _key_state(key, event.timestamp)
            entry = event_view(event, None)
            entry["changes"] = {
                name: {"from": before.get(name), "to": value}
                for name, value in after.items()
                if before.get(name) != value
            }
            entries.append(entry)
            before = after
        return entries

    # -- the org's feed ------------------------------------------------------------------

    def org_events(self, org_id: UUID, *, after: int = 0, limit: int = 100) -> EventPage:
        """The org's lifecycle events after log position `after`, in log order, at most `limit`.

        The org's own events and those of its keys and webhook endpoints (each carries
        `org_id`; one joins its org in the transaction that creates it, so the org's
        `KeyAdded` or `WebhookAdded` event names it before, or with, its first event). For a
        test key, live keys and endpoints and the events that name them are left out: test
        mode sees test mode only.
        """
        authorize(self.actor, Command.READ_AUDIT, org_id=org_id)
        envs = visible_envs(self.actor)
        if not 1 <= limit <= MAX_FEED_LIMIT:
            raise ValidationError(f"limit must be 1 to {MAX_FEED_LIMIT}")
        if after < 0:
            raise ValidationError("after must be a position (0 or more)")
        org = self.registry.get_organization(org_id)
        members: set[UUID] = {org_id, *org.key_ids, *org.webhook_ids}
        key_envs: dict[UUID, Environment] = {}
        found: list[tuple[int, Any]] = []
        position = after
        scanned = 0
        while scanned < self.max_scan:
            page = self.registry.recorder.select_notifications(
                start=position,
                limit=min(self.page_size, self.max_scan - scanned),
                inclusive_of_start=False,
            )
            if not page:
                return self._page(found, limit, position, head_reached=True)
            decoded = self._learn_members(page, org_id, members)
            for notification in page:
                position = notification.id
                scanned += 1
                if notification.originator_id not in members:
                    continue
                event = decoded.get(notification.id)
                if event is None:
                    event = self.registry.mapper.to_domain_event(notification)
                if not self._in_envs(event, org_id, envs, key_envs):
                    continue
                found.append((notification.id, event))
                if len(found) > limit:
                    return self._page(found, limit, position, head_reached=False)
        return self._page(found, limit, position, head_reached=False)

    def _in_envs(
        self,
        event: Any,
        org_id: UUID,
        envs: frozenset[Environment],
        key_envs: dict[UUID, Environment],
    ) -> bool:
        """Whether the event's key (the one it names, for KeyAdded) is in one of `envs`."""
        if envs >= frozenset(Environment):
            return True
        if isinstance(event, ApiKey.Created | WebhookEndpoint.Created):
            key_envs[event.originator_id] = Environment(event.env)
        if isinstance(event, Organization.KeyAdded):
            key_id = event.key_id
        elif isinstance(event, Organization.WebhookAdded | Organization.WebhookRemoved):
            key_id = event.webhook_id
        elif event.originator_id == org_id:
            return True  # the organization's own events (plan, limits) concern both modes
        else:
            key_id = event.originator_id
        env = key_envs.get(key_id)
        if env is None:
            env = key_envs[key_id] = self._env_of(key_id)
        return env in envs

    def _env_of(self, aggregate_id: UUID) -> Environment:
        """The environment of a key or webhook endpoint of the org."""
        aggregate: object = self.registry.repository.get(aggregate_id)
        if not isinstance(aggregate, ApiKey | WebhookEndpoint):
            raise NotFound("no such API key")
        return aggregate.env

    def _learn_members(
        self, page: Sequence[Any], org_id: UUID, members: set[UUID]
    ) -> dict[int, Any]:
        """Decode the org's own events in a page, adding the keys they name to `members`."""
        decoded: dict[int, Any] = {}
        for notification in page:
            if notification.originator_id == org_id:
                event = self.registry.mapper.to_domain_event(notification)
                decoded[notification.id] = event
                if isinstance(event, Organization.KeyAdded):
                    members.add(event.key_id)
                elif isinstance(event, Organization.WebhookAdded):
                    members.add(event.webhook_id)
        return decoded

    @staticmethod
    def _page(
        found: list[tuple[int, Any]], limit: int, scanned_to: int, *, head_reached: bool
    ) -> EventPage:
        if len(found) > limit:
            shown = found[:limit]
            return EventPage([event_view(e, p) for p, e in shown], shown[-1][0], shown[-1][0])
        events = [event_view(e, p) for p, e in found]
        return EventPage(events, None if head_reached else scanned_to, scanned_to)

    # -- the past state of the org's keys ------------------------------------------------

    def keys_as_of(self, org_id: UUID, moment: datetime) -> list[dict[str, Any]]:
        """The org's keys as they were at `moment`, oldest first, as key objects at that time.

        A key created after `moment` is absent; status, name, expiry and permissions (under
        the org's plan at that time) are what they were then. An instant before the org
        existed gives no keys.
        """
        authorize(self.actor, Command.READ_KEYS, org_id=org_id)
        envs = visible_envs(self.actor)
        if moment.tzinfo is None:
            raise ValidationError("as_of needs a time zone, e.g. 2026-03-01T12:00:00Z")
        if moment > self.registry.clock() + AS_OF_SKEW:
            raise ValidationError("as_of must not be in the future")
        org_events = self._events(org_id)
        if not org_events or not isinstance(org_events[0], Organization.Registered):
            raise NotFound("no such organization")
        org = _fold(org_events, until=moment)
        if org is None:
            return []
        views: list[dict[str, Any]] = []
        for added in org_events:
            if not isinstance(added, Organization.KeyAdded):
                continue
            if added.timestamp > moment + _ADDED_MARGIN:
                continue  # added, so created, well after the instant: no need to read it
            key = _fold(self._events(added.key_id), until=moment)
            if key is not None and key.env in envs:
                views.append(api_key_view(key, org, moment))
        return views
